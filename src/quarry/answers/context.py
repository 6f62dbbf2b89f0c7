"""The context builder: ranked hits in, numbered passages out, under a hard token budget.

Counted with the target model's own tokenizer, the evidence gets ``budget.evidence_tokens``:
what the total leaves after the answer's reserve, times the evidence share. Within it:

1. near-duplicates go (the same text, or embeddings at least ``duplicate_threshold`` alike);
2. at most ``max_per_document`` chunks per document, so one document cannot crowd out the
   rest;
3. selection by rank with coverage: first the best chunk of each document, in rank order,
   then the rest, in rank order; a chunk that does not fit is skipped, not cut;
4. chosen chunks of one document that touch or overlap merge into one passage, and a chunk
   pays only for what it adds (the overlap is not paid twice, nor the title);
5. with ``passage_tokens`` set, a chunk longer than that is first cut down to the sentences
   that match the most query terms (the rest marked …), so more documents fit;
6. when a document's best chunk does not fit and its summary (``documents.summary``) does,
   the summary stands in for it;
7. the passages are numbered [1], [2], ... in rank order, for citation.

Everything left out is returned with its reason, for debugging.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from quarry.search.models import Hit

Reason = Literal["near_duplicate", "per_document_cap", "over_budget", "replaced_by_summary"]
CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Budget:
    total: int = 2048  # tokens of the model's context this call may use
    answer_reserve: int = 512  # kept free for the answer
    evidence_share: float = 0.75  # of the rest, for evidence (the rest: instructions, question)
    evidence_limit: int | None = None  # a lower ceiling: what the prompt's other parts leave

    def __post_init__(self) -> None:
        if self.total < 1 or self.answer_reserve < 0 or self.answer_reserve >= self.total:
            raise ValueError("the budget needs total > answer_reserve >= 0")
        if not 0 < self.evidence_share <= 1:
            raise ValueError("evidence_share must be in (0, 1]")

    @property
    def evidence_tokens(self) -> int:
        share = int((self.total - self.answer_reserve) * self.evidence_share)
        return share if self.evidence_limit is None else max(0, min(share, self.evidence_limit))


@dataclass
class Passage:
    """One or more touching chunks of a document, as the model will read them."""

    document_id: uuid.UUID
    title: str
    chunk_ids: list[int]
    text: str
    char_start: int
    char_end: int
    page: int | None
    rank: int  # the best (lowest) search rank among its chunks, 1-based
    number: int = 0  # its citation number, once chosen
    tokens: int = 0
    summary: bool = False  # the document's summary standing in for its chunks
    focused: bool = False  # cut to its best sentences: text no longer matches the offsets

    @classmethod
    def of_summary(cls, hit: Hit, rank: int, summary: str) -> Passage:
        return cls(
            document_id=hit.document_id,
            title=hit.document_title,
            chunk_ids=[],
            text=summary,
            char_start=0,
            char_end=0,
            page=None,
            rank=rank,
            summary=True,
        )

    @classmethod
    def of(cls, hit: Hit, rank: int) -> Passage:
        return cls(
            document_id=hit.document_id,
            title=hit.document_title,
            chunk_ids=[hit.chunk_id],
            text=hit.text,
            char_start=hit.char_start,
            char_end=hit.char_end,
            page=hit.page,
            rank=rank,
        )

    def render(self) -> str:
        """``[n] title`` over the text; a text that already begins with the title (a document's
        first chunk) is not given it twice."""
        title = self.title.strip()
        if self.summary:
            return f"[{self.number}] {title} (summary)\n{self.text}"
        if not title or self.text.lstrip().startswith(title):
            return f"[{self.number}] {self.text.lstrip()}"
        return f"[{self.number}] {title}\n{self.text}"


@dataclass(frozen=True)
class Dropped:
    chunk_ids: tuple[int, ...]
    document_id: uuid.UUID
    rank: int
    reason: Reason
    detail: str = ""


@dataclass
class Context:
    passages: list[Passage]
    dropped: list[Dropped]
    budget: Budget
    tokens: int  # what the rendered evidence costs, separators included
    separator: str = "\n\n"

    def render(self) -> str:
        return self.separator.join(p.render() for p in self.passages)

    def by_number(self) -> dict[int, Passage]:
        return {p.number: p for p in self.passages}


class ContextBuilder:
    def __init__(
        self,
        count_tokens: CountTokens,
        *,
        duplicate_threshold: float = 0.95,
        max_per_document: int = 2,
        separator: str = "\n\n",
        passage_tokens: int | None = None,
    ) -> None:
        """``passage_tokens``: when set, a chunk longer than this is cut down to its
        sentences that best match the query's terms (in their order, gaps marked with …)."""
        if max_per_document < 1:
            raise ValueError("max_per_document must be at least 1")
        if passage_tokens is not None and passage_tokens < 16:
            raise ValueError("passage_tokens must be at least 16")
        self.passage_tokens = passage_tokens
        self.count_tokens = count_tokens
        self.duplicate_threshold = duplicate_threshold
        self.max_per_document = max_per_document
        self.separator = separator

    def build(
        self,
        hits: Sequence[Hit],
        budget: Budget,
        vectors: Mapping[int, npt.NDArray[np.float32]] | None = None,
        summaries: Mapping[uuid.UUID, str] | None = None,
        query_terms: Sequence[str] = (),
    ) -> Context:
        """``summaries``: documents' summaries, which may stand in for a document whose best
        chunk does not fit the budget left (when the summary does). ``query_terms``: the
        query as BM25 analysed it (stems), for cutting long chunks to their best sentences."""
        dropped: list[Dropped] = []
        focused: frozenset[int] = frozenset()
        if self.passage_tokens is not None and query_terms:
            cut = [self._focus(hit, query_terms) for hit in hits]
            focused = frozenset(a.chunk_id for a, b in zip(cut, hits, strict=True) if a is not b)
            hits = cut
        ranked = list(enumerate(hits, start=1))
        kept = self._unique(ranked, vectors or {}, dropped)
        kept = self._cap(kept, dropped)
        chosen, summarised = self._select(kept, budget, dropped, summaries or {}, focused)
        passages = self._assemble(chosen, summarised, focused)
        used = self._cost(passages)
        while used > budget.evidence_tokens:  # numbering can shift a token; give back the last
            last_chunk = max(chosen, key=lambda item: item[0], default=None)
            last_summary = max(summarised, key=lambda p: p.rank, default=None)
            if last_summary is not None and (
                last_chunk is None or last_summary.rank > last_chunk[0]
            ):
                summarised.remove(last_summary)
                detail = "its summary did not fit once numbered"
                dropped.append(
                    Dropped((), last_summary.document_id, last_summary.rank, "over_budget", detail)
                )
            else:
                assert last_chunk is not None
                chosen.remove(last_chunk)
                dropped.append(
                    _drop(
                        [last_chunk[1]], last_chunk[0], "over_budget", "did not fit once numbered"
                    )
                )
            passages = self._assemble(chosen, summarised, focused)
            used = self._cost(passages)
        dropped.sort(key=lambda d: d.rank)
        return Context(passages, dropped, budget, used, self.separator)

    def _assemble(
        self, chosen: list[tuple[int, Hit]], summarised: list[Passage], focused: frozenset[int]
    ) -> list[Passage]:
        passages = sorted(_merge(chosen, focused) + summarised, key=lambda p: p.rank)
        for number, passage in enumerate(passages, start=1):
            passage.number = number
            passage.tokens = self.count_tokens(passage.render())
        return passages

    # 0. long chunks cut to their best sentences ------------------------------------------------

    def _focus(self, hit: Hit, terms: Sequence[str]) -> Hit:
        """The chunk's sentences that match the most query terms, best first, while they fit
        ``passage_tokens``, put back in their order; a gap is marked with …. A chunk that
        already fits, or that matches no term, is kept whole (its rank came from its meaning).
        The focused hit keeps its chunk's offsets but is never merged with a neighbour."""
        assert self.passage_tokens is not None
        if self.count_tokens(hit.text) <= self.passage_tokens:
            return hit
        sentences = [m for m in _SENTENCE.finditer(hit.text) if m.group().strip()]
        scores = [_matches(m.group(), terms) for m in sentences]
        if len(sentences) < 2 or not any(scores):
            return hit
        order = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
        kept: list[int] = []
        used = 0
        for i in order:
            if scores[i] == 0 and kept:
                break
            cost = self.count_tokens(sentences[i].group()) + 1
            if kept and used + cost > self.passage_tokens:
                continue
            kept.append(i)
            used += cost
        kept.sort()
        parts: list[str] = []
        for j, i in enumerate(kept):
            if (j == 0 and i > 0) or (j > 0 and i != kept[j - 1] + 1):
                parts.append("…")
            parts.append(sentences[i].group().strip())
        if kept[-1] != len(sentences) - 1:
            parts.append("…")
        return hit.model_copy(update={"text": " ".join(parts)})

    # 1. near-duplicates ------------------------------------------------------------------------

    def _unique(
        self,
        ranked: list[tuple[int, Hit]],
        vectors: Mapping[int, npt.NDArray[np.float32]],
        dropped: list[Dropped],
    ) -> list[tuple[int, Hit]]:
        kept: list[tuple[int, Hit]] = []
        seen_text: dict[bytes, int] = {}
        kept_vectors: list[tuple[int, npt.NDArray[np.float32]]] = []
        for rank, hit in ranked:
            digest = hashlib.sha256(" ".join(hit.text.split()).lower().encode()).digest()
            if digest in seen_text:
                dropped.append(
                    _drop([hit], rank, "near_duplicate", f"same text as rank {seen_text[digest]}")
                )
                continue
            vector = vectors.get(hit.chunk_id)
            twin = None
            if vector is not None:
                for other_rank, other in kept_vectors:
                    if float(np.dot(vector, other)) >= self.duplicate_threshold:
                        twin = other_rank
                        break
            if twin is not None:
                dropped.append(
                    _drop([hit], rank, "near_duplicate", f"embedding like rank {twin}'s")
                )
                continue
            seen_text[digest] = rank
            if vector is not None:
                kept_vectors.append((rank, vector))
            kept.append((rank, hit))
        return kept

    # 2. a cap per document -------------------------------------------------------------------

    def _cap(self, kept: list[tuple[int, Hit]], dropped: list[Dropped]) -> list[tuple[int, Hit]]:
        count: dict[uuid.UUID, int] = {}
        capped = []
        for rank, hit in kept:
            count[hit.document_id] = count.get(hit.document_id, 0) + 1
            if count[hit.document_id] > self.max_per_document:
                detail = f"at most {self.max_per_document} chunks per document"
                dropped.append(_drop([hit], rank, "per_document_cap", detail))
            else:
                capped.append((rank, hit))
        return capped

    # 3. selection by rank with coverage, merging as it goes ----------------------------------

    def _select(
        self,
        kept: list[tuple[int, Hit]],
        budget: Budget,
        dropped: list[Dropped],
        summaries: Mapping[uuid.UUID, str],
        focused: frozenset[int],
    ) -> tuple[list[tuple[int, Hit]], list[Passage]]:
        """Each document's best chunk first, in rank order, then the rest in rank order. A
        chunk costs what it adds to its document's passages: a chunk that touches one already
        chosen pays only for its new text, not for the overlap nor the title again. When a
        document's best chunk does not fit and its summary does, the summary goes in instead
        (and the document's other chunks stay out)."""
        firsts: list[tuple[int, Hit]] = []
        rest: list[tuple[int, Hit]] = []
        seen: set[uuid.UUID] = set()
        for item in kept:
            (rest if item[1].document_id in seen else firsts).append(item)
            seen.add(item[1].document_id)
        separator = self.count_tokens(self.separator)
        chosen: dict[uuid.UUID, list[tuple[int, Hit]]] = {}
        summarised: dict[uuid.UUID, Passage] = {}
        cost: dict[uuid.UUID, int] = {}
        left = budget.evidence_tokens
        wide = len(kept)  # a stand-in number as wide as any real one
        for rank, hit in firsts + rest:
            doc = hit.document_id
            if doc in summarised:
                detail = "its document is in the context as its summary"
                dropped.append(_drop([hit], rank, "replaced_by_summary", detail))
                continue
            trial = [*chosen.get(doc, []), (rank, hit)]
            passages = _merge(trial, focused)
            for passage in passages:
                passage.number = wide
            new_cost = sum(self.count_tokens(p.render()) for p in passages)
            new_cost += separator * (len(passages) - 1)
            added = new_cost - cost.get(doc, 0)
            if doc not in cost and (chosen or summarised):
                added += separator
            if added <= left:
                chosen[doc] = trial
                cost[doc] = new_cost
                left -= added
                continue
            summary = summaries.get(doc)
            if summary and doc not in chosen:
                stand_in = Passage.of_summary(hit, rank, summary)
                stand_in.number = wide
                needs = self.count_tokens(stand_in.render())
                needs += separator if (chosen or summarised) else 0
                if needs <= left:
                    summarised[doc] = stand_in
                    cost[doc] = needs
                    left -= needs
                    detail = f"needs {added} tokens, {left + needs} left; its summary {needs}"
                    dropped.append(_drop([hit], rank, "replaced_by_summary", detail))
                    continue
            dropped.append(_drop([hit], rank, "over_budget", f"needs {added} tokens, {left} left"))
        picked = [item for items in chosen.values() for item in items]
        return picked, list(summarised.values())

    def _cost(self, passages: Sequence[Passage]) -> int:
        if not passages:
            return 0
        return self.count_tokens(self.separator.join(p.render() for p in passages))


def naive_context(hits: Sequence[Hit], budget: Budget, count_tokens: CountTokens) -> Context:
    """The baseline: the hits in rank order, each as its own numbered passage, until the next
    one does not fit."""
    passages: list[Passage] = []
    left = budget.evidence_tokens
    for rank, hit in enumerate(hits, start=1):
        passage = Passage.of(hit, rank)
        passage.number = rank
        passage.tokens = count_tokens(passage.render()) + (count_tokens("\n\n") if passages else 0)
        if passage.tokens > left:
            break
        passages.append(passage)
        left -= passage.tokens
    used = count_tokens("\n\n".join(p.render() for p in passages)) if passages else 0
    return Context(passages, [], budget, used)


def _merge(
    items: Sequence[tuple[int, Hit]], focused: frozenset[int] = frozenset()
) -> list[Passage]:
    """Chunks as passages: those of one document that touch or overlap become one (its text
    the union of theirs, by character offsets); a ``focused`` chunk (cut to its best
    sentences) stays a passage of its own. Ordered by their best rank."""
    by_document: dict[uuid.UUID, list[tuple[int, Hit]]] = {}
    for rank, hit in items:
        by_document.setdefault(hit.document_id, []).append((rank, hit))
    passages: list[Passage] = []
    for group in by_document.values():
        group.sort(key=lambda item: item[1].char_start)
        current: Passage | None = None
        for rank, hit in group:
            if (
                current is not None
                and hit.char_start <= current.char_end
                and hit.chunk_id not in focused
                and not current.focused
            ):
                if hit.char_end > current.char_end:
                    current.text += hit.text[current.char_end - hit.char_start :]
                    current.char_end = hit.char_end
                current.chunk_ids.append(hit.chunk_id)
                current.rank = min(current.rank, rank)
                continue
            current = Passage.of(hit, rank)
            current.focused = hit.chunk_id in focused
            passages.append(current)
    passages.sort(key=lambda p: p.rank)
    return passages


def _drop(hits: Sequence[Hit], rank: int, reason: Reason, detail: str) -> Dropped:
    return Dropped(tuple(h.chunk_id for h in hits), hits[0].document_id, rank, reason, detail)


_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|\n|$)")
_WORD = re.compile(r"\w+")


def _matches(sentence: str, terms: Sequence[str]) -> int:
    """How many of the query's stems the sentence holds. A word matches a stem it begins
    with, or that it shares all but the stem's last letter with (study, studies: studi)."""
    words = {w.lower() for w in _WORD.findall(sentence)}
    found = 0
    for stem in set(terms):
        if len(stem) < 4:
            found += stem in words
        else:
            found += any(w.startswith(stem) or w.startswith(stem[:-1]) for w in words)
    return found
