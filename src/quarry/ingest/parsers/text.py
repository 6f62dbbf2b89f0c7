"""Plain text, Markdown, JSON and CSV: decoded as text, refusing binary content."""

from __future__ import annotations

import codecs
import json
import unicodedata

from quarry.errors import BinaryContent, CorruptDocument, EmptyDocument
from quarry.ingest.parsers import MAX_TEXT_CHARS, Format, Parsed, too_much_text

# Share of control characters (other than whitespace) above which "text" is binary.
_MAX_CONTROL_SHARE = 0.01
_WHITESPACE_CONTROLS = {"\t", "\n", "\r", "\f", "\v"}


def decode(data: bytes) -> str:
    """Bytes as text (UTF-8, or UTF-16 with a byte-order mark); binary content is refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = _decode(data, "utf-16")
    else:
        if b"\x00" in data:
            raise BinaryContent("the file contains NUL bytes: it is binary, not text")
        text = _decode(data, "utf-8-sig")
    sample = text[:100_000]
    controls = sum(
        1 for ch in sample if ch not in _WHITESPACE_CONTROLS and unicodedata.category(ch) == "Cc"
    )
    if sample and controls / len(sample) > _MAX_CONTROL_SHARE:
        raise BinaryContent("the file is mostly control characters: it is binary, not text")
    if not text.strip():
        raise EmptyDocument("the document has no text")
    return text


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BinaryContent(
            f"the file is not valid UTF-8 text (byte {exc.start}); convert it to UTF-8"
        ) from None


def parse_text(data: bytes) -> Parsed:
    return Parsed(text=decode(data))


def parse_markdown(data: bytes) -> Parsed:
    text = decode(data)
    title = next(
        (line.lstrip("#").strip() for line in text.splitlines() if line.startswith("# ")), None
    )
    return Parsed(text=text, title=title, structured=True)


def parse_json(data: bytes) -> Parsed:
    text = decode(data)
    try:
        return Parsed(text=_indented(json.loads(text)))
    except json.JSONDecodeError as exc:
        raise CorruptDocument(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise CorruptDocument("the JSON is nested too deeply to read") from None


def _indented(value: object) -> str:
    """``value`` as indented JSON. Indented, a value nested a few hundred deep grows by its
    depth on every line: a few megabytes of JSON could make gigabytes of text, so the text
    is counted as it is made."""
    pieces, length = [], 0
    for piece in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(value):
        length += len(piece)
        if length > MAX_TEXT_CHARS:
            raise too_much_text("the JSON")
        pieces.append(piece)
    return "".join(pieces)


FORMATS = [
    Format("txt", (".txt", ".text", ".log"), parse_text, ("text/plain",)),
    Format("md", (".md", ".markdown"), parse_markdown, ("text/markdown",)),
    Format("json", (".json",), parse_json, ("application/json",)),
    Format("csv", (".csv",), parse_text, ("text/csv",)),
]
