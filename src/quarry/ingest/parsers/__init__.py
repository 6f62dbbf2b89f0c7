"""Parsers turn a document's bytes into text, registered by format.

Adding a format is one module with a ``FORMATS`` list plus one line in ``BUILTIN_MODULES``.
A parser raises a ``DocumentError`` subclass for input it cannot read; those are permanent.
``read`` runs a parser so that anything else it raises is permanent too (the same bytes fail
the same way), and no document yields more than ``MAX_TEXT_CHARS`` of text: a small DOCX or
PDF can unpack to gigabytes, and formats that can are bounded while they are read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

from quarry.errors import CorruptDocument, DocumentError, DocumentTooLarge, UnsupportedFormat
from quarry.validation import storable_text

# The most text one document may yield, in characters (twice what a text file at the default
# QUARRY_MAX_UPLOAD_BYTES holds; about 64,000 chunks of the bundled model).
MAX_TEXT_CHARS = 64 * 1024 * 1024


def too_much_text(what: str, limit: int = MAX_TEXT_CHARS) -> DocumentTooLarge:
    return DocumentTooLarge(f"{what} yields more than {limit} characters of text")


@dataclass(frozen=True)
class Parsed:
    """A document's text. ``page_starts[i]`` is where page i+1 begins, for formats with pages."""

    text: str
    title: str | None = None
    page_starts: tuple[int, ...] = ()
    structured: bool = False  # Markdown headings and lists mark the structure to split on

    def __post_init__(self) -> None:
        if len(self.text) > MAX_TEXT_CHARS:
            raise too_much_text("the document")
        # Whatever a parser extracts must fit in Postgres' text: a PDF's extracted text can
        # hold NUL characters, so can a UTF-16 file. Replaced one for one, so page starts and
        # chunk offsets stay true (``storable_text``).
        object.__setattr__(self, "text", storable_text(self.text))
        if self.title is not None:
            object.__setattr__(self, "title", storable_text(self.title))

    def page_at(self, offset: int) -> int | None:
        if not self.page_starts:
            return None
        page = 0
        for i, start in enumerate(self.page_starts):
            if start > offset:
                break
            page = i
        return page + 1


Parser = Callable[[bytes], Parsed]


def read(fmt: Format, data: bytes) -> Parsed:
    """``fmt``'s parser over ``data``, where every failure is a ``DocumentError``: parsing is
    deterministic, so what a parser raises (a library's own error, a RecursionError from deep
    nesting, a MemoryError) would only happen again on a retry."""
    try:
        return fmt.parse(data)
    except DocumentError:
        raise
    except MemoryError:
        raise DocumentTooLarge(f"the {fmt.name} needs more memory to read than there is") from None
    except RecursionError:
        raise CorruptDocument(f"the {fmt.name} is nested too deeply to read") from None
    except Exception as exc:
        raise CorruptDocument(
            f"the {fmt.name} cannot be read: {type(exc).__name__}: {exc}"
        ) from None


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]
    parse: Parser
    media_types: tuple[str, ...] = field(default=())


BUILTIN_MODULES = (
    "quarry.ingest.parsers.text",
    "quarry.ingest.parsers.html",
    "quarry.ingest.parsers.pdf",
    "quarry.ingest.parsers.docx",
)


class ParserRegistry:
    def __init__(self, formats: Iterable[Format] = ()) -> None:
        self._by_name: dict[str, Format] = {}
        self._by_extension: dict[str, Format] = {}
        self._by_media_type: dict[str, Format] = {}
        for fmt in formats:
            self.register(fmt)

    @classmethod
    def builtin(cls) -> ParserRegistry:
        formats: list[Format] = []
        for module in BUILTIN_MODULES:
            formats.extend(importlib.import_module(module).FORMATS)
        return cls(formats)

    def register(self, fmt: Format) -> None:
        self._by_name[fmt.name] = fmt
        for extension in fmt.extensions:
            self._by_extension[extension.lower()] = fmt
        for media_type in fmt.media_types:
            self._by_media_type[media_type] = fmt

    @property
    def extensions(self) -> list[str]:
        return sorted(self._by_extension)

    def get(self, name: str) -> Format:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnsupportedFormat(
                f"unknown format {name!r}; supported: {', '.join(sorted(self._by_name))}",
                field="format",
            ) from None

    def detect(self, filename: str | None, media_type: str | None = None) -> Format:
        """The format of a file, by its extension first, then by its media type."""
        suffix = PurePath(filename).suffix.lower() if filename else ""
        if suffix in self._by_extension:
            return self._by_extension[suffix]
        base_type = (media_type or "").split(";")[0].strip().lower()
        if base_type in self._by_media_type:
            return self._by_media_type[base_type]
        shown = suffix or base_type or "no extension"
        raise UnsupportedFormat(
            f"{filename or 'the document'}: {shown} is not a supported type; "
            f"supported: {', '.join(self.extensions)}"
        )
