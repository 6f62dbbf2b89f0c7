"""HTML: the main text, with navigation, scripts and other boilerplate dropped."""

from __future__ import annotations

import lxml.html
import trafilatura
from lxml import etree
from trafilatura.settings import Document

from quarry.errors import EmptyDocument
from quarry.ingest.parsers import Format, Parsed
from quarry.ingest.parsers.text import decode

_BOILERPLATE = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form")


def parse_html(data: bytes) -> Parsed:
    html = decode(data)
    extracted = trafilatura.bare_extraction(
        html, include_comments=False, include_tables=True, favor_recall=True, with_metadata=True
    )
    found = extracted if isinstance(extracted, Document) else None
    text = (found.text if found else None) or _visible_text(html)
    if not text or not text.strip():
        raise EmptyDocument("the HTML page has no text")
    title = _title(html) or (found.title if found else None)
    return Parsed(text=text.strip(), title=title)


def _root(html: str) -> lxml.html.HtmlElement | None:
    try:
        return lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return None


def _visible_text(html: str) -> str:
    """A fallback for pages too short for trafilatura's heuristics."""
    root = _root(html)
    if root is None:
        return ""
    for element in root.iter(*_BOILERPLATE):
        element.drop_tree()
    body = root.find("body")
    blocks = (body if body is not None else root).itertext()
    return "\n".join(line.strip() for line in blocks if line.strip())


def _title(html: str) -> str | None:
    root = _root(html)
    found = root.findtext(".//title") if root is not None else None
    return found.strip() if found and found.strip() else None


FORMATS = [Format("html", (".html", ".htm"), parse_html, ("text/html",))]
