"""Reciprocal rank fusion's arithmetic and the adaptive weights' behaviour."""

import pytest

from quarry.search.fusion import reciprocal_rank_fusion


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    runs = {"bm25": [(1, 9.0), (2, 5.0)], "vector": [(2, 0.9), (3, 0.8)]}
    fused = reciprocal_rank_fusion(runs, {"bm25": 1.0, "vector": 1.0}, k=60)
    assert [f.chunk_id for f in fused] == [2, 1, 3]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == {"bm25": 2, "vector": 1}
    assert fused[0].scores == {"bm25": 5.0, "vector": 0.9}
    assert fused[2].ranks == {"vector": 2}


def test_rrf_weights_decide_between_disagreeing_retrievers() -> None:
    runs = {"bm25": [(1, 9.0)], "vector": [(2, 0.9)]}
    assert reciprocal_rank_fusion(runs, {"bm25": 2.0, "vector": 1.0})[0].chunk_id == 1
    assert reciprocal_rank_fusion(runs, {"bm25": 1.0, "vector": 2.0})[0].chunk_id == 2
    # A tie breaks by chunk id, so results are stable.
    assert [f.chunk_id for f in reciprocal_rank_fusion(runs, {})] == [1, 2]


def test_rrf_of_nothing_is_nothing() -> None:
    assert reciprocal_rank_fusion({}, {}) == []
    assert reciprocal_rank_fusion({"bm25": []}, {"bm25": 1.0}) == []
