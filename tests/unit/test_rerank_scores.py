"""The rerank stage's arithmetic: late interaction's MaxSim and the blend with the fused score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quarry.search.beir import variants
from quarry.search.models import Mode
from quarry.search.rerank import blend, maxsim


def unit(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_maxsim_averages_each_query_tokens_best_match() -> None:
    query = unit([1, 0, 0], [0, 1, 0])
    passage = unit([1, 0, 0], [0, 1, 1], [0, 0, 1])
    # The first token finds itself (1.0); the second's best is the diagonal (1/sqrt 2).
    assert maxsim(query, passage) == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    # Order of the passage's tokens does not matter; a passage with more matches scores more.
    assert maxsim(query, passage[::-1]) == pytest.approx(maxsim(query, passage))
    assert maxsim(query, unit([1, 0, 0], [0, 1, 0])) == pytest.approx(1.0)
    assert maxsim(query, unit([0, 0, 1])) == pytest.approx(0.0)


def test_maxsim_of_nothing_is_zero() -> None:
    empty = np.zeros((0, 3), dtype=np.float32)
    assert maxsim(empty, unit([1, 0, 0])) == 0.0
    assert maxsim(unit([1, 0, 0]), empty) == 0.0


def test_blend_without_a_fused_weight_keeps_the_rerankers_scores() -> None:
    assert blend([9.0, 1.0, 5.0], [0.1, 0.3, 0.2], 0.0) == [9.0, 1.0, 5.0]


def test_blend_adds_z_scores() -> None:
    # z-scores of two values are -1 and +1 whatever their scale.
    assert blend([0.2, 0.4], [7.0, 3.0], 1.0) == pytest.approx([0.0, 0.0])
    assert blend([0.2, 0.4], [7.0, 3.0], 0.5) == pytest.approx([-0.5, 0.5])
    assert blend([10.0, 20.0, 30.0], [1.0, 2.0, 3.0], 1.0) == pytest.approx(
        [-2 * math.sqrt(1.5), 0.0, 2 * math.sqrt(1.5)]
    )
    # The reranker can overturn the fused order only where it disagrees by more.
    final = blend([0.1, 0.9, 0.5], [3.0, 2.0, 1.0], 1.0)
    assert max(range(3), key=final.__getitem__) == 1


def test_blend_where_a_side_has_no_spread() -> None:
    assert blend([2.0, 2.0], [5.0, 1.0], 1.0) == pytest.approx([1.0, -1.0])
    assert blend([3.0], [0.4], 1.0) == [0.0]
    assert blend([], [], 1.0) == []


def test_the_eval_runs_hybrid_reranked_only_with_a_reranker() -> None:
    modes = [Mode.bm25, Mode.vector, Mode.hybrid]
    plain = variants(modes, reranker=False)
    assert [v.name for v in plain] == ["bm25", "vector", "hybrid", "hybrid_rrf"]
    assert not any(v.rerank for v in plain)
    reranked = variants(modes, reranker=True)
    assert [v.name for v in reranked] == ["bm25", "vector", "hybrid", "hybrid_rrf", "hybrid_rerank"]
    assert [v.rerank for v in reranked] == [False, False, False, False, True]
    assert [v.name for v in variants([Mode.bm25], reranker=True)] == ["bm25"]
