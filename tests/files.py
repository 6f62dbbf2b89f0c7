"""Real documents made by the tests: PDF (fpdf2, encrypted with pypdf), DOCX (python-docx)."""

from __future__ import annotations

import io
import zipfile
import zlib

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


def pdf_of_one_stream(pages: int, lines: int) -> bytes:
    """A PDF whose ``pages`` pages all draw the same content stream of ``lines`` lines of
    text: a few kilobytes that read as ``pages`` times the stream's text."""
    content = b"BT /F1 12 Tf 10 10 Td\n" + b"(a line of text on a page) Tj\n" * lines + b"ET\n"
    stream = zlib.compress(content, 9)
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    )
    objects += [page] * pages
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def docx_unpacking_to(size: int) -> bytes:
    """A real DOCX whose document.xml unpacks to at least ``size`` bytes of paragraphs (a
    few hundred kilobytes of zip per hundred megabytes)."""
    base = docx_file([("p", "seed")])
    paragraph = b"<w:p><w:r><w:t>" + b"word " * 20_000 + b"</w:t></w:r></w:p>"
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename != "word/document.xml":
                archive.writestr(item, data)
                continue
            start = data.index(b"<w:body>") + len(b"<w:body>")
            with archive.open(item.filename, "w", force_zip64=True) as part:
                part.write(data[:start])
                block = paragraph * 100
                for _ in range(size // len(block) + 1):
                    part.write(block)
                part.write(data[start:])
    return out.getvalue()
