"""The context builder: ranked hits in, numbered passages out, under a hard token budget.

Counted with the target model's own tokenizer, the evidence gets ``budget.evidence_tokens``:
what the total leaves after the answer's reserve, times the evidence share. Within it:

1. near-duplicates go (the same text, or embeddings at least ``duplicate_threshold`` alike);
2. chunks of one document that touch or overlap merge into one passage (the overlap is
   not paid twice, nor the title);
3. at most ``max_per_document`` passages per document, so one document cannot crowd out the
   rest;
4. selection by rank with coverage: first the best passage of each document, in rank order,
   then the rest, in rank order; a passage that does not fit is skipped, not cut;
5. the chosen passages are numbered [1], [2], ... in rank order, for citation.

Everything left out is returned with its reason, for debugging.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from quarry.search.models import Hit

Reason = Literal["near_duplicate", "per_document_cap", "over_budget"]
CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Budget:
    total: int = 2048  # tokens of the model's context this call may use
    answer_reserve: int = 512  # kept free for the answer
    evidence_share: float = 0.75  # of the rest, for evidence (the rest: instructions, question)

    def __post_init__(self) -> None:
        if self.total < 1 or self.answer_reserve < 0 or self.answer_reserve >= self.total:
            raise ValueError("the budget needs total > answer_reserve >= 0")
        if not 0 < self.evidence_share <= 1:
            raise ValueError("evidence_share must be in (0, 1]")

    @property
    def evidence_tokens(self) -> int:
        return int((self.total - self.answer_reserve) * self.evidence_share)


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

    def render(self) -> str:
        """``[n] title`` over the text; a text that already begins with the title (a document's
        first chunk) is not given it twice."""
        title = self.title.strip()
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
    ) -> None:
        if max_per_document < 1:
            raise ValueError("max_per_document must be at least 1")
        self.count_tokens = count_tokens
        self.duplicate_threshold = duplicate_threshold
        self.max_per_document = max_per_document
        self.separator = separator

    def build(
        self,
        hits: Sequence[Hit],
        budget: Budget,
        vectors: Mapping[int, npt.NDArray[np.float32]] | None = None,
    ) -> Context:
        dropped: list[Dropped] = []
        ranked = list(enumerate(hits, start=1))
        kept = self._unique(ranked, vectors or {}, dropped)
        passages = self._merge(kept)
        passages = self._cap(passages, dropped)
        chosen = self._select(passages, budget, dropped)
        chosen.sort(key=lambda p: p.rank)
        for number, passage in enumerate(chosen, start=1):
            passage.number = number
        used = self._cost(chosen)
        dropped.sort(key=lambda d: d.rank)
        return Context(chosen, dropped, budget, used, self.separator)

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

    # 2. adjacent chunks of one document merge ----------------------------------------------

    def _merge(self, kept: list[tuple[int, Hit]]) -> list[Passage]:
        by_document: dict[uuid.UUID, list[tuple[int, Hit]]] = {}
        for rank, hit in kept:
            by_document.setdefault(hit.document_id, []).append((rank, hit))
        passages: list[Passage] = []
        for items in by_document.values():
            items.sort(key=lambda item: item[1].char_start)
            current: Passage | None = None
            for rank, hit in items:
                if current is not None and hit.char_start <= current.char_end:
                    overlap = current.char_end - hit.char_start
                    if hit.char_end > current.char_end:
                        current.text += hit.text[overlap:]
                        current.char_end = hit.char_end
                    current.chunk_ids.append(hit.chunk_id)
                    current.rank = min(current.rank, rank)
                    continue
                current = Passage(
                    document_id=hit.document_id,
                    title=hit.document_title,
                    chunk_ids=[hit.chunk_id],
                    text=hit.text,
                    char_start=hit.char_start,
                    char_end=hit.char_end,
                    page=hit.page,
                    rank=rank,
                )
                passages.append(current)
        passages.sort(key=lambda p: p.rank)
        return passages

    # 3. a cap per document ---------------------------------------------------------------------

    def _cap(self, passages: list[Passage], dropped: list[Dropped]) -> list[Passage]:
        count: dict[uuid.UUID, int] = {}
        kept = []
        for passage in passages:
            count[passage.document_id] = count.get(passage.document_id, 0) + 1
            if count[passage.document_id] > self.max_per_document:
                dropped.append(
                    _drop_passage(
                        passage, "per_document_cap", f"at most {self.max_per_document} per document"
                    )
                )
            else:
                kept.append(passage)
        return kept

    # 4. selection by rank with coverage ------------------------------------------------------

    def _select(
        self, passages: list[Passage], budget: Budget, dropped: list[Dropped]
    ) -> list[Passage]:
        firsts: list[Passage] = []
        rest: list[Passage] = []
        seen: set[uuid.UUID] = set()
        for passage in passages:
            (rest if passage.document_id in seen else firsts).append(passage)
            seen.add(passage.document_id)
        separator = self.count_tokens(self.separator) if passages else 0
        left = budget.evidence_tokens
        chosen: list[Passage] = []
        for passage in firsts + rest:
            passage.number = len(chosen) + 1  # a stand-in of the same width, for counting
            passage.tokens = self.count_tokens(passage.render())
            cost = passage.tokens + (separator if chosen else 0)
            if cost <= left:
                chosen.append(passage)
                left -= cost
            else:
                dropped.append(
                    _drop_passage(passage, "over_budget", f"needs {cost} tokens, {left} left")
                )
        return chosen

    def _cost(self, chosen: list[Passage]) -> int:
        if not chosen:
            return 0
        return self.count_tokens(self.separator.join(p.render() for p in chosen))


def naive_context(hits: Sequence[Hit], budget: Budget, count_tokens: CountTokens) -> Context:
    """The baseline: the hits in rank order, each as its own numbered passage, until the next
    one does not fit."""
    passages: list[Passage] = []
    left = budget.evidence_tokens
    for rank, hit in enumerate(hits, start=1):
        passage = Passage(
            document_id=hit.document_id,
            title=hit.document_title,
            chunk_ids=[hit.chunk_id],
            text=hit.text,
            char_start=hit.char_start,
            char_end=hit.char_end,
            page=hit.page,
            rank=rank,
            number=rank,
        )
        passage.tokens = count_tokens(passage.render()) + (count_tokens("\n\n") if passages else 0)
        if passage.tokens > left:
            break
        passages.append(passage)
        left -= passage.tokens
    used = count_tokens("\n\n".join(p.render() for p in passages)) if passages else 0
    return Context(passages, [], budget, used)


def _drop(hits: Sequence[Hit], rank: int, reason: Reason, detail: str) -> Dropped:
    return Dropped(tuple(h.chunk_id for h in hits), hits[0].document_id, rank, reason, detail)


def _drop_passage(passage: Passage, reason: Reason, detail: str) -> Dropped:
    return Dropped(tuple(passage.chunk_ids), passage.document_id, passage.rank, reason, detail)
