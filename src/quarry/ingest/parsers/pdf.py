"""PDF: the text of each page, with page numbers kept."""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError, PyPdfError

from quarry.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument
from quarry.ingest.parsers import MAX_TEXT_CHARS, Format, Parsed, too_much_text

PAGE_SEPARATOR = "\n\n"
MAX_PAGES = 20_000


def parse_pdf(data: bytes) -> Parsed:
    # pypdf logs every repairable oddity of real-world PDFs as a warning.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocument("the PDF is password-protected; upload it without a password")
        pages = _page_texts(reader)
        title = reader.metadata.title if reader.metadata else None
    except (FileNotDecryptedError, NotImplementedError) as exc:
        raise EncryptedDocument(f"the PDF is password-protected ({exc})") from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise CorruptDocument(f"the PDF cannot be read: {exc}") from None
    starts, parts, offset = [], [], 0
    for text in pages:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_SEPARATOR)
    joined = PAGE_SEPARATOR.join(parts)
    if not joined.strip():
        raise EmptyDocument("the PDF has no extractable text (scanned images need OCR)")
    return Parsed(text=joined, title=title or None, page_starts=tuple(starts))


def _page_texts(reader: PdfReader, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    """Each page's text, stopping as soon as there are too many pages or too much text: pages
    can share one content stream, so a PDF of a few kilobytes can hold gigabytes of text."""
    if len(reader.pages) > MAX_PAGES:
        raise DocumentTooLarge(f"the PDF has {len(reader.pages)} pages; the limit is {MAX_PAGES}")
    pages, length = [], 0
    for page in reader.pages:
        text = page.extract_text() or ""
        length += len(text) + len(PAGE_SEPARATOR)
        if length > max_chars:
            raise too_much_text("the PDF", max_chars)
        pages.append(text)
    return pages


FORMATS = [Format("pdf", (".pdf",), parse_pdf, ("application/pdf",))]
