"""Rank fusion: one implementation, used by every caller (API, CLI, eval, answers).

Reciprocal rank fusion scores a candidate by ``sum(w_r / (k + rank_r))`` over the retrievers
that returned it. It needs no score calibration, which is why it is the default way to mix a
lexical and a dense retriever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# A retriever's answer: (chunk id, its own score), best first.
Run = Sequence[tuple[int, float]]


@dataclass
class Fused:
    chunk_id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def reciprocal_rank_fusion(
    runs: Mapping[str, Run], weights: Mapping[str, float], k: int = 60
) -> list[Fused]:
    fused: dict[int, Fused] = {}
    for name, run in runs.items():
        weight = weights.get(name, 1.0)
        for rank, (chunk_id, score) in enumerate(run, start=1):
            item = fused.get(chunk_id)
            if item is None:
                item = fused[chunk_id] = Fused(chunk_id, 0.0)
            item.score += weight / (k + rank)
            item.ranks[name] = rank
            item.scores[name] = score
    return sorted(fused.values(), key=lambda f: (-f.score, f.chunk_id))


def adaptive_weights(runs: Mapping[str, Run]) -> dict[str, float]:
    return {name: 1.0 for name in runs}
