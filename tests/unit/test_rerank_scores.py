"""The rerank stage's arithmetic: late interaction's MaxSim and the blend with the fused score."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from quarry.search.beir import variants
from quarry.search.fusion import Fused
from quarry.search.models import Mode
from quarry.search.rerank import blend, maxsim, maxsims, reranked_order


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


def test_maxsims_scores_each_passage_as_maxsim_does() -> None:
    rng = np.random.default_rng(7)
    query = unit(*rng.normal(size=(5, 8)).tolist())
    empty = np.zeros((0, 8), dtype=np.float32)
    passages = [unit(*rng.normal(size=(n, 8)).tolist()) for n in (1, 40, 3)]
    mixed = [passages[0], None, passages[1], empty, passages[2]]
    expected = [maxsim(query, p) if p is not None else 0.0 for p in mixed]
    assert maxsims(query, mixed) == pytest.approx(expected, abs=1e-6)
    assert maxsims(query, []) == []
    assert maxsims(query, [None, empty]) == [0.0, 0.0]
    assert maxsims(empty, passages) == [0.0, 0.0, 0.0]


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


def test_the_eval_runs_each_mode_as_the_service_does_with_its_references() -> None:
    modes = [Mode.bm25, Mode.vector, Mode.hybrid]
    plain = variants(modes, reranker=False)
    assert [v.name for v in plain] == ["bm25", "vector", "hybrid", "hybrid_rrf"]
    assert [v.rerank for v in plain] == [None, None, None, False]
    reranked = variants(modes, reranker=True)
    # "hybrid" is the service's default (reranked); "hybrid_fused" is the fusion without it.
    assert [v.name for v in reranked] == ["bm25", "vector", "hybrid", "hybrid_fused", "hybrid_rrf"]
    assert [v.rerank for v in reranked] == [None, None, None, False, False]
    assert [v.name for v in variants([Mode.bm25], reranker=True)] == ["bm25"]


def test_the_reranker_s_weight_scales_its_share_of_the_blend() -> None:
    rerank, fused = [3.0, 1.0, 2.0], [1.0, 2.0, 3.0]
    # Without weight the fused order stands; with a small one it barely moves.
    assert blend(rerank, fused, 1.0, 0.0) == pytest.approx(blend([0, 0, 0], fused, 1.0))
    rerank_z = blend(rerank, [0, 0, 0], 1.0)  # a set with no spread adds nothing
    fused_z = blend([0, 0, 0], fused, 1.0)
    half = blend(rerank, fused, 1.0, 0.5)
    assert half == pytest.approx([0.5 * r + f for r, f in zip(rerank_z, fused_z, strict=True)])


def test_late_interaction_follows_the_fusions_trust_in_the_dense_side() -> None:
    from quarry.search.fusion import AGREEMENT_FOR_FULL_WEIGHT, dense_trust
    from quarry.search.rerank import CrossEncoderReranker, LateInteractionReranker, rerank_weight

    class Late:
        trust_power = LateInteractionReranker.trust_power

    class Cross:
        trust_power = CrossEncoderReranker.trust_power

    assert dense_trust(None) == 1.0
    assert dense_trust(AGREEMENT_FOR_FULL_WEIGHT) == 1.0
    assert dense_trust(0.0) == 0.0
    low = AGREEMENT_FOR_FULL_WEIGHT / 2
    assert rerank_weight(Late(), low) == pytest.approx(dense_trust(low) ** 0.5)  # type: ignore[arg-type]
    assert 0 < dense_trust(low) < rerank_weight(Late(), low) < 1  # type: ignore[arg-type]
    assert rerank_weight(Cross(), 0.0) == 1.0  # type: ignore[arg-type]


def test_a_page_longer_than_the_rerank_depth_stays_in_score_order() -> None:
    document = uuid.uuid4()
    head = [Fused(1, document, -2.3, {"fused": 1}), Fused(2, document, 1.5, {"fused": 2})]
    tail = [Fused(3, document, 0.9), Fused(4, document, 0.4), Fused(5, document, -7.0)]
    page = reranked_order(head, tail)
    assert [f.chunk_id for f in page] == [2, 1, 3, 4, 5]
    scores = [f.score for f in page]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    assert scores[3] - scores[2] == pytest.approx(0.4 - 0.9)  # the tail keeps its spacing
    assert [f.ranks["fused"] for f in page] == [2, 1, 3, 4, 5]
    below = [Fused(6, document, -9.0)]  # already below the head: left as it is
    assert reranked_order([Fused(7, document, 1.0, {"fused": 1})], below)[1].score == -9.0
