"""Fusion: reciprocal rank fusion's arithmetic, z-score fusion, per-document items, and the
agreement gate that keeps a weak dense retriever from displacing good lexical hits."""

import uuid

import pytest

from quarry.search.fusion import (
    AGREEMENT_FOR_FULL_WEIGHT,
    AGREEMENT_POWER,
    Candidate,
    Method,
    best_per_document,
    fuse,
)

A, B, C, D = (uuid.UUID(int=i) for i in range(1, 5))


def run(*items: tuple[int, uuid.UUID, float]) -> list[Candidate]:
    return [Candidate(chunk, doc, score) for chunk, doc, score in items]


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    runs = {"bm25": run((1, A, 9.0), (2, B, 5.0)), "vector": run((2, B, 0.9), (3, C, 0.8))}
    fused = fuse(runs, method=Method.rrf, rrf_k=60).fused
    assert [f.chunk_id for f in fused] == [2, 1, 3]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == {"bm25": 2, "vector": 1}
    assert fused[0].scores == {"bm25": 5.0, "vector": 0.9}
    assert fused[2].ranks == {"vector": 2}


def test_explicit_weights_decide_between_disagreeing_retrievers() -> None:
    runs = {"bm25": run((1, A, 9.0), (4, D, 1.0)), "vector": run((2, B, 0.9), (5, C, 0.1))}
    for method in Method:
        lexical = fuse(runs, method=method, weights={"bm25": 2.0, "vector": 1.0})
        dense = fuse(runs, method=method, weights={"bm25": 1.0, "vector": 2.0})
        assert lexical.fused[0].chunk_id == 1, method
        assert dense.fused[0].chunk_id == 2, method
        assert lexical.weights == {"bm25": 2.0, "vector": 1.0}


def test_zscore_fusion_rewards_a_clear_winner_over_a_narrow_one() -> None:
    # bm25 is sure about chunk 1 (far above the rest); vector barely prefers chunk 2.
    bm25 = run((1, A, 20.0), (2, B, 2.0), (3, C, 1.9), (4, D, 1.8))
    vector = run((2, B, 0.52), (1, A, 0.51), (3, C, 0.50), (4, D, 0.49))
    fused = fuse({"bm25": bm25, "vector": vector}, weights={"bm25": 1.0, "vector": 1.0})
    assert fused.fused[0].chunk_id == 1
    # Rank fusion cannot see the difference: a tie, broken by chunk id.
    rrf = fuse({"bm25": bm25, "vector": vector}, method=Method.rrf)
    assert rrf.fused[0].score == pytest.approx(rrf.fused[1].score)


def test_a_candidate_missing_from_a_run_scores_that_runs_floor() -> None:
    bm25 = run((1, A, 3.0), (2, B, 1.0))
    vector = run((1, A, 0.9), (3, C, 0.5))
    fused = {f.chunk_id: f for f in fuse({"bm25": bm25, "vector": vector}, weights={}).fused}
    # z of a two-point run is +1 and -1; a missing candidate gets the run's lowest, -1.
    assert fused[1].score == pytest.approx(2.0)
    assert fused[2].score == pytest.approx(-2.0)
    assert fused[3].score == pytest.approx(-2.0)


def test_per_document_makes_one_item_per_document_from_its_best_ranked_chunk() -> None:
    # Document A's best chunk is 1 for bm25 but 2 for vector: still one item, scored from
    # both retrievers' ranks of document A, represented by the chunk ranked highest.
    bm25 = run((1, A, 9.0), (3, B, 5.0), (2, A, 4.0))
    vector = run((3, B, 0.9), (2, A, 0.8), (1, A, 0.7))
    for method in Method:
        fused = fuse({"bm25": bm25, "vector": vector}, method=method, per_document=True).fused
        assert sorted(f.document_id for f in fused) == [A, B], method
        item = next(f for f in fused if f.document_id == A)
        assert item.ranks == {"bm25": 1, "vector": 2}
        assert item.chunk_id == 1
    assert [c.chunk_id for c in best_per_document(vector)] == [3, 2]


def test_the_dense_weight_follows_agreement() -> None:
    docs = [uuid.UUID(int=i) for i in range(100, 140)]
    lexical = run(*((i, docs[i], 40.0 - i) for i in range(20)))
    same = run(*((i, docs[i], 0.9 - i / 100) for i in range(20)))
    unrelated = run(*((100 + i, docs[20 + i], 0.9 - i / 100) for i in range(20)))
    agreeing = fuse({"bm25": lexical, "vector": same})
    assert agreeing.agreement == 1.0
    assert agreeing.weights == {"bm25": 0.5, "vector": 0.5}
    disagreeing = fuse({"bm25": lexical, "vector": unrelated})
    assert disagreeing.agreement == 0.0
    assert disagreeing.weights == {"bm25": 0.5, "vector": 0.0}
    assert all("bm25" in f.ranks for f in disagreeing.fused[:10])
    # Part of the way to full agreement: part of the weight.
    half = run(*((i, docs[i] if i % 2 == 0 else docs[20 + i], 0.9 - i / 100) for i in range(20)))
    partial = fuse({"bm25": lexical, "vector": half})
    assert partial.agreement == pytest.approx(0.5 * (0.5 + 0.5))
    expected = 0.5 * min(1.0, partial.agreement / AGREEMENT_FOR_FULL_WEIGHT) ** AGREEMENT_POWER
    assert partial.weights["vector"] == pytest.approx(expected, abs=1e-4)


def test_one_retriever_or_none() -> None:
    only = fuse({"bm25": run((1, A, 2.0), (2, B, 1.0)), "vector": []})
    assert [f.chunk_id for f in only.fused] == [1, 2]
    assert only.agreement is None
    assert fuse({}).fused == []
    single = fuse({"vector": run((7, A, 0.3))})
    assert [(f.chunk_id, f.score) for f in single.fused] == [(7, 0.0)]
