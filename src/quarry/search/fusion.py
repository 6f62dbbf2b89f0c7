"""Fusion of the retrievers' answers: one implementation, used by every caller (API, CLI, eval,
answers).

Two methods:

- ``rrf``: reciprocal rank fusion, ``sum(w_r / (k + rank_r))``. Needs no calibration, ignores
  how far apart the scores are.
- ``adaptive`` (the default): each retriever's scores become z-scores over its own candidates
  (so a document far above the rest counts for more than one barely ahead), combined with
  per-retriever weights. Without explicit weights, the dense side's weight is scaled per query
  by how much the two retrievers agree: the share of each one's top 10 that the other also
  has in its top 100, divided by ``AGREEMENT_FOR_FULL_WEIGHT`` and capped at one.

Why gate the dense side and not the lexical one: BM25 is the retriever that holds across
collections (the lesson of BEIR), while a dense model out of its domain ranks close to noise.
Where it does, the two retrievers barely agree on any query, and an equal-weight fusion lets
the noise displace good lexical hits: on SciFact with a deliberately weak embedder (hashed
words) equal-weight RRF scored 0.43 nDCG@10 against BM25's 0.69, while the gated fusion
scored 0.687. Where the dense model is good, the two agree on most queries and it keeps most
of its weight. ``AGREEMENT_FOR_FULL_WEIGHT`` is 0.7, not the 0.6 that SciFact's train queries
prefer (0.7318 against 0.7296 nDCG@10 with all-MiniLM-L6-v2): with titles in every chunk the
weak hashed embedder agrees with BM25 more, and at 0.6 it pulled hybrid 0.011 below BM25 on
the robustness slice (tests/integration/test_fusion_robustness.py); at 0.7, 0.008. The
figures and the sweeps behind the constants are in bench/README.md.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Method(StrEnum):
    adaptive = "adaptive"
    rrf = "rrf"


LEXICAL = "bm25"
DENSE = "vector"
AGREEMENT_TOP = 10  # how many of each retriever's best hits are checked...
AGREEMENT_DEPTH = 100  # ...against how many of the other's
AGREEMENT_FOR_FULL_WEIGHT = 0.7
AGREEMENT_POWER = 2  # below full agreement the weight falls off quadratically
DEFAULT_WEIGHTS = {LEXICAL: 0.5, DENSE: 0.5}


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    document_id: uuid.UUID
    score: float


# A retriever's answer, best first.
Run = Sequence[Candidate]


@dataclass
class Fused:
    chunk_id: int
    document_id: uuid.UUID
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def sink_below(floor: float, items: list[Fused]) -> None:
    """Move the scores of ``items`` (in rank order: the first is the highest) as a block to
    just below ``floor``, keeping their spacing; items already below it stay as they are.
    What follows a ranked page (a rerank's tail, documents read deeper) then ranks after it
    by score too."""
    if items and items[0].score >= floor:
        drop = items[0].score - floor + max(abs(floor), 1.0) * 1e-6
        for item in items:
            item.score -= drop


@dataclass
class Fusion:
    fused: list[Fused]
    weights: dict[str, float]
    agreement: float | None  # None with fewer than two retrievers


def fuse(
    runs: Mapping[str, Run],
    *,
    method: Method = Method.adaptive,
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    per_document: bool = False,
    collection_size: int = 0,
) -> Fusion:
    """Fuse the runs. With ``per_document``, each document is one item, represented by its
    best chunk (the one a retriever ranked highest), and scored from each retriever's rank of
    that document (BEIR's max over a document's chunks)."""
    if per_document:
        runs = {name: best_per_document(run) for name, run in runs.items()}
    present = {name: run for name, run in runs.items() if run}
    agreement = _agreement(present, collection_size) if len(present) == 2 else None
    if weights is not None:
        used = {name: float(weights.get(name, 1.0)) for name in runs}
    elif method is Method.rrf:
        used = {name: 1.0 for name in runs}
    else:
        used = {name: DEFAULT_WEIGHTS.get(name, 0.5) for name in runs}
        if DENSE in used:
            used[DENSE] *= dense_trust(agreement)
    items = _collect(present, per_document)
    fused = _rrf(items, used, rrf_k) if method is Method.rrf else _zscore(items, present, used)
    return Fusion(fused, {name: round(w, 4) for name, w in used.items()}, agreement)


def dense_trust(agreement: float | None) -> float:
    """The share of its weight the dense side keeps for a query, from how much the two
    retrievers agree (``_agreement``): all of it at ``AGREEMENT_FOR_FULL_WEIGHT`` or more,
    falling off as a power below; all of it where agreement was not measured (one retriever).
    The late-interaction rerank stage, which reads the same model, follows it too
    (``quarry.search.rerank``)."""
    if agreement is None:
        return 1.0
    return min(1.0, agreement / AGREEMENT_FOR_FULL_WEIGHT) ** AGREEMENT_POWER


def best_per_document(run: Run) -> list[Candidate]:
    """A document's best chunk stands for it (BEIR's max over a document's chunks)."""
    seen: set[uuid.UUID] = set()
    kept = []
    for candidate in run:
        if candidate.document_id not in seen:
            seen.add(candidate.document_id)
            kept.append(candidate)
    return kept


def _key(candidate: Candidate, per_document: bool) -> int | uuid.UUID:
    return candidate.document_id if per_document else candidate.chunk_id


def _collect(runs: Mapping[str, Run], per_document: bool) -> dict[int | uuid.UUID, Fused]:
    """One item per chunk (or per document), with each retriever's rank and score of it."""
    items: dict[int | uuid.UUID, Fused] = {}
    # Best ranks first, so a document is represented by the chunk ranked highest anywhere.
    ordered = sorted(
        ((rank, name, c) for name, run in runs.items() for rank, c in enumerate(run, start=1)),
        key=lambda entry: entry[0],
    )
    for rank, name, c in ordered:
        key = _key(c, per_document)
        item = items.get(key)
        if item is None:
            item = items[key] = Fused(c.chunk_id, c.document_id, 0.0)
        item.ranks[name] = rank
        item.scores[name] = c.score
    return items


def _rrf(items: dict[int | uuid.UUID, Fused], weights: Mapping[str, float], k: int) -> list[Fused]:
    for item in items.values():
        item.score = sum(weights[name] / (k + rank) for name, rank in item.ranks.items())
    return sorted(items.values(), key=lambda f: (-f.score, f.chunk_id))


def _zscore(
    items: dict[int | uuid.UUID, Fused], runs: Mapping[str, Run], weights: Mapping[str, float]
) -> list[Fused]:
    """Weighted sum of z-scores; a candidate a retriever did not return gets that
    retriever's lowest z-score (it ranked below everything the retriever returned)."""
    for name, run in runs.items():
        scores = [c.score for c in run]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        floor = (min(scores) - mean) / sd if sd > 0 else 0.0
        for item in items.values():
            score = item.scores.get(name)
            z = floor if score is None else ((score - mean) / sd if sd > 0 else 0.0)
            item.score += weights[name] * z
    return sorted(items.values(), key=lambda f: (-f.score, f.chunk_id))


def _agreement(runs: Mapping[str, Run], collection_size: int) -> float:
    """How much more each retriever's top documents are among the other's than chance.

    The share of one's top documents that the other also found, averaged both ways, then
    corrected for chance as Cohen's kappa is: in a collection of 500 chunks, a depth of 100
    covers a fifth of everything, so even noise "agrees" 20% of the time.
    """
    (a, b) = (best_per_document(run) for run in runs.values())

    def share(top: list[Candidate], other: list[Candidate]) -> float:
        found = {c.document_id for c in other[:AGREEMENT_DEPTH]}
        head = top[:AGREEMENT_TOP]
        return sum(c.document_id in found for c in head) / len(head)

    observed = (share(a, b) + share(b, a)) / 2
    depth = max(min(len(run), AGREEMENT_DEPTH) for run in runs.values())
    chance = min(1.0, depth / collection_size) if collection_size > 0 else 0.0
    if chance >= 1.0:
        return observed  # the runs hold the whole collection: nothing to correct against
    return max(0.0, (observed - chance) / (1 - chance))
