"""Token-exact, structure-aware splitting with the embedder's own tokenizer.

The document is tokenized once, with character offsets. Every place a chunk may start is
given a level: a Markdown heading (5, structured formats only), a paragraph (4), a line (3),
a sentence (2), a word (1). Chunks are packed greedily: each ends at the last boundary of the
highest level that still leaves the chunk at least ``min_fill`` full, so chunks follow the
document's structure without becoming tiny (a title is not a chunk of its own). Neighbouring
chunks share up to ``overlap`` tokens, starting at a word boundary.

A chunk of a titled document that does not itself begin with the title carries it as its
``context``: the model embeds, and BM25 analyses, ``context`` and text together
(``Chunk.indexed_text``), so the second half of an abstract still matches a query about its
subject. The chunk's text and offsets stay the document's own. Room for the context is taken
from the budget of every chunk but a first one that begins with the title; titles longer than
``MAX_CONTEXT_TOKENS`` (or a quarter of a chunk) are cut.

A chunk never exceeds the embedder's input limit: a model silently ignores whatever lies past
it (all-MiniLM-L6-v2 reads 256 word pieces), so such text must not exist. Every chunk is
re-counted exactly as the model will see it (context included), and any over the limit is cut
again.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass

from tokenizers import Tokenizer

from quarry.ingest.parsers import Parsed

HEADING, PARAGRAPH, LINE, SENTENCE, WORD = 5, 4, 3, 2, 1
_BOUNDARIES = (
    (HEADING, re.compile(r"(?m)^#{1,6}[ \t]")),  # where a heading line starts
    (PARAGRAPH, re.compile(r"\n[ \t]*\n\s*")),  # where the next paragraph starts
    (LINE, re.compile(r"\n\s*")),
    (SENTENCE, re.compile(r"[.!?…][\"')\]]*\s+")),
)
_WORD_TOKENS = re.compile(r"\S+")
MAX_CONTEXT_TOKENS = 32
CONTEXT_SEPARATOR = "\n\n"  # also in the SQL function indexed_text (migration 0006)


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    char_start: int
    char_end: int
    page: int | None
    token_count: int  # of indexed_text, as the model sees it
    content_hash: bytes  # of indexed_text: the same hash means the same embedding
    context: str = ""

    @property
    def indexed_text(self) -> str:
        return indexed_text(self.context, self.text)


def indexed_text(context: str, text: str) -> str:
    """What the model embeds and BM25 analyses: the chunk's context, then its text."""
    return f"{context}{CONTEXT_SEPARATOR}{text}" if context else text


def content_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Splitter:
    def __init__(
        self,
        tokenizer: Tokenizer | None,
        max_tokens: int,
        chunk_tokens: int,
        overlap: int,
        min_fill: float = 0.5,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.capacity = min(chunk_tokens, max_tokens)
        self.specials = len(tokenizer.encode("").ids) if tokenizer is not None else 0
        self.budget = self.capacity - self.specials  # tokens of text per chunk
        if self.budget < 2:
            raise ValueError(f"a chunk of {self.capacity} tokens leaves no room for text")
        self.overlap = min(overlap, self.budget // 2)
        self.min_fill = min_fill

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the model sees it, special tokens included."""
        if self.tokenizer is None:
            return [len(_WORD_TOKENS.findall(text)) for text in texts]
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts)]

    def split(self, parsed: Parsed, title: str = "") -> list[Chunk]:
        """The document's chunks; ``title`` (the document's, if it has one) becomes the
        context of every chunk that does not begin with it."""
        text = parsed.text
        context, reserved = self._context(title)
        # A document that opens with its title: its first chunk carries no context, so it
        # keeps the whole budget.
        first_reserved = 0 if not self._context_for(text, context) else reserved
        offsets = self._offsets(text)
        spans = [
            (offsets[start][0], offsets[end - 1][1])
            for start, end in self._pack(text, offsets, parsed.structured, reserved, first_reserved)
        ]
        spans = [(a, b) for a, b in spans if any(ch.isalnum() for ch in text[a:b])]
        contexts = [self._context_for(text[a:b], context) for a, b in spans]
        counts = self._count_indexed(text, spans, contexts)
        if any(count > self.max_tokens for count in counts):
            spans = self._enforce_limit(spans, counts, text, reserved)
            contexts = [self._context_for(text[a:b], context) for a, b in spans]
            counts = self._count_indexed(text, spans, contexts)
        chunks = []
        for i, ((start, end), chunk_context, count) in enumerate(
            zip(spans, contexts, counts, strict=True)
        ):
            chunk_text = text[start:end]
            chunks.append(
                Chunk(
                    index=i,
                    text=chunk_text,
                    char_start=start,
                    char_end=end,
                    page=parsed.page_at(start),
                    token_count=count,
                    content_hash=content_hash(indexed_text(chunk_context, chunk_text)),
                    context=chunk_context,
                )
            )
        return chunks

    def _count_indexed(
        self, text: str, spans: list[tuple[int, int]], contexts: list[str]
    ) -> list[int]:
        pairs = zip(contexts, spans, strict=True)
        return self.count([indexed_text(c, text[a:b]) for c, (a, b) in pairs])

    def _context(self, title: str) -> tuple[str, int]:
        """The title on one line, cut at a token boundary to MAX_CONTEXT_TOKENS and to a
        quarter of a chunk, with the tokens a chunk gives up for it (the separator is
        whitespace: none)."""
        title = " ".join(title.split())
        limit = min(MAX_CONTEXT_TOKENS, self.budget // 4)
        offsets = self._offsets(title)
        if not offsets or limit < 1:
            return "", 0
        kept = min(limit, len(offsets))
        return title[: offsets[kept - 1][1]], kept

    @staticmethod
    def _context_for(chunk_text: str, context: str) -> str:
        """A chunk that starts with the title (the document's first, usually) needs none."""
        if not context or " ".join(chunk_text[: len(context) * 2].split()).startswith(context):
            return ""
        return context

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        if self.tokenizer is None:
            return [match.span() for match in _WORD_TOKENS.finditer(text)]
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return [span for span in encoding.offsets if span[1] > span[0]]

    def _pack(
        self,
        text: str,
        offsets: list[tuple[int, int]],
        structured: bool,
        reserved: int,
        first_reserved: int,
    ) -> list[tuple[int, int]]:
        """Token ranges [start, end) of the chunks, each leaving ``reserved`` tokens free
        (the first, ``first_reserved``)."""
        n = len(offsets)
        if n == 0:
            return []
        at_least = _boundary_index(text, offsets, structured)
        spans: list[tuple[int, int]] = []
        start = 0
        while start < n:
            budget = self.budget - (first_reserved if start == 0 else reserved)
            limit = start + budget
            end = n if limit >= n else self._end(at_least, start, limit, budget)
            spans.append((start, end))
            if end >= n:
                break
            start = self._next_start(at_least[WORD], start, end)
        return spans

    def _end(self, at_least: dict[int, list[int]], start: int, limit: int, budget: int) -> int:
        """The last boundary of the highest level that leaves the chunk at least min_fill."""
        lowest = start + max(1, int(budget * self.min_fill))
        for level in (HEADING, PARAGRAPH, LINE, SENTENCE, WORD):
            indices = at_least[level]
            i = bisect.bisect_right(indices, limit) - 1
            if i >= 0 and indices[i] >= lowest:
                return indices[i]
        return limit  # one word longer than a chunk: cut between its tokens

    def _next_start(self, words: list[int], start: int, end: int) -> int:
        if not self.overlap:
            return end
        i = bisect.bisect_left(words, max(end - self.overlap, start + 1))
        return words[i] if i < len(words) and words[i] < end else end

    def _enforce_limit(
        self, spans: list[tuple[int, int]], counts: list[int], text: str, reserved: int
    ) -> list[tuple[int, int]]:
        """Cut again, at token boundaries, any chunk the model would see as too long (a
        tokenizer can count a slice differently from the same text in context)."""
        result: list[tuple[int, int]] = []
        for (start, end), count in zip(spans, counts, strict=True):
            if count <= self.max_tokens:
                result.append((start, end))
                continue
            inner = [(a + start, b + start) for a, b in self._offsets(text[start:end])]
            step = max(1, self.max_tokens - self.specials - reserved - 8)
            for i in range(0, len(inner), step):
                window = inner[i : i + step]
                result.append((window[0][0], window[-1][1]))
        return result


def _boundary_index(
    text: str, offsets: list[tuple[int, int]], structured: bool
) -> dict[int, list[int]]:
    """For each level, the sorted token indices where a chunk may start at that level or a
    higher one."""
    starts = [start for start, _ in offsets]
    # A word starts wherever whitespace separates a token from the one before it.
    levels: dict[int, int] = {
        i: WORD for i in range(1, len(offsets)) if offsets[i][0] > offsets[i - 1][1]
    }
    for level, pattern in _BOUNDARIES:
        if level == HEADING and not structured:
            continue
        for match in pattern.finditer(text):
            position = match.start() if level == HEADING else match.end()
            i = bisect.bisect_left(starts, position)
            if 0 < i < len(offsets) and levels.get(i, 0) < level:
                levels[i] = level
    ordered = sorted(levels.items())
    return {
        level: [i for i, found in ordered if found >= level]
        for level in (HEADING, PARAGRAPH, LINE, SENTENCE, WORD)
    }
