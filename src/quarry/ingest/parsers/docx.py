"""DOCX: paragraphs and headings (as Markdown headings, so splitting follows them) and tables."""

from __future__ import annotations

import io
import zipfile

import docx
from docx.opc.exceptions import PackageNotFoundError

from quarry.errors import CorruptDocument, DocumentTooLarge, EmptyDocument
from quarry.ingest.parsers import Format, Parsed

# The most a DOCX may unpack to: python-docx reads every part into memory (media included),
# and a few hundred kilobytes of zip can hold gigabytes.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def parse_docx(data: bytes) -> Parsed:
    _check_unpacked(data)
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


def _check_unpacked(data: bytes) -> None:
    """Refuse a DOCX whose parts unpack to more than MAX_UNPACKED_BYTES in all, before any
    is unpacked. A zip entry cannot unpack to more than the size it declares: Python's
    zipfile stops there, and the entry then fails its checksum."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise CorruptDocument(f"the DOCX cannot be read: {exc}") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise DocumentTooLarge(
            f"the DOCX unpacks to {unpacked} bytes; the limit is {MAX_UNPACKED_BYTES}"
        )


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
