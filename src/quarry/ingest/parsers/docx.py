"""DOCX: paragraphs and headings (as Markdown headings, so splitting follows them) and tables."""

from __future__ import annotations

import io
import zipfile

import docx
from docx.opc.exceptions import PackageNotFoundError

from quarry.errors import CorruptDocument, EmptyDocument
from quarry.ingest.parsers import Format, Parsed


def parse_docx(data: bytes) -> Parsed:
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CorruptDocument(f"the DOCX cannot be read: {exc}") from None
    lines: list[str] = []
    title: str | None = document.core_properties.title or None
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        level = _heading_level(paragraph.style.name if paragraph.style is not None else "")
        if level:
            lines.append(f"{'#' * level} {text}")
            title = title or text
        else:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells]
            if any(cells):
                lines.append(" | ".join(cells))
    if not lines:
        raise EmptyDocument("the DOCX has no text")
    return Parsed(text="\n\n".join(lines), title=title, structured=True)


def _heading_level(style: str | None) -> int:
    if not style:
        return 0
    if style == "Title":
        return 1
    if style.startswith("Heading "):
        suffix = style.removeprefix("Heading ")
        return min(int(suffix), 6) if suffix.isdigit() else 0
    return 0


FORMATS = [
    Format(
        "docx",
        (".docx",),
        parse_docx,
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",),
    )
]
