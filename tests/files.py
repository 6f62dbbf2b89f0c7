"""Real documents made by the tests: PDF (fpdf2, encrypted with pypdf), DOCX (python-docx)."""

from __future__ import annotations

import io

import docx
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter


def pdf(pages: list[str], *, title: str = "", password: str | None = None) -> bytes:
    document = FPDF()
    document.set_font("Helvetica", size=12)
    if title:
        document.set_title(title)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    data = bytes(document.output())
    if password is None:
        return data
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_file(blocks: list[tuple[str, str]]) -> bytes:
    """``blocks``: (kind, text) with kind "h1", "h2" or "p"."""
    document = docx.Document()
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML = b"""<!doctype html><html><head><title>Solar Report</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/login">Log in</a></nav>
<header><div class="banner">Subscribe to our newsletter for the latest updates</div></header>
<main><article><h1>Solar output in 2026</h1>
<p>Photovoltaic output rose by eleven percent over the previous year across the region.</p>
<p>Storage capacity doubled, which flattened the evening peak of demand considerably.</p>
</article></main>
<footer>Copyright 2026 Example Corp. All rights reserved. Privacy policy.</footer>
<script>var tracking = "should never be indexed";</script>
</body></html>"""
