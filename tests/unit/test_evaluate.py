"""Retrieval metrics against hand-computed values, and the BEIR loader's refusals."""

import math
from pathlib import Path

import pytest

from quarry.errors import InvalidInput
from quarry.search.evaluate import (
    BeirDataset,
    compare,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
    summarize,
)


def test_ndcg_of_a_perfect_ranking_is_one_and_of_a_miss_is_zero() -> None:
    relevant = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "x"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at(["x", "y"], relevant, 10) == 0.0


def test_ndcg_discounts_by_position_and_uses_graded_gain() -> None:
    # One relevant document (grade 2) at rank 2: DCG = 2 / log2(3); IDCG = 2 / log2(2).
    assert ndcg_at(["x", "a"], {"a": 2}, 10) == pytest.approx(1 / math.log2(3))
    # Past the cut-off it does not count.
    assert ndcg_at(["x", "a"], {"a": 1}, 1) == 0.0


def test_graded_gain_is_the_grade_as_in_trec_eval() -> None:
    # pytrec_eval's ndcg_cut_10 for qrels {d1: 2, d2: 1} and the run [d2, d1]:
    # (1 + 2/log2(3)) / (2 + 1/log2(3)) = 0.8597
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at(["d2", "d1"], {"d1": 2, "d2": 1}, 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.8597, abs=1e-4)


def test_recall_and_mrr() -> None:
    relevant = {"a": 1, "b": 1, "c": 0}
    assert recall_at(["a", "x", "b"], relevant, 2) == 0.5
    assert recall_at(["a", "x", "b"], relevant, 3) == 1.0
    assert mrr_at(["x", "y", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at(["c"], relevant, 10) == 0.0  # grade 0 is not relevant


def test_summarize_counts_a_query_without_a_run_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    figures = summarize({"q1": ["a"]}, qrels, [10.0, 30.0])
    assert figures["ndcg@10"] == 0.5
    assert figures["recall@100"] == 0.5
    assert figures["p50_ms"] == 20.0


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile([], 95) == 0.0


def test_compare_reports_drops_past_the_tolerance_and_ignores_latency() -> None:
    baseline = {"bm25": {"ndcg@10": 0.70, "p95_ms": 10.0}, "vector": {"ndcg@10": 0.6}}
    current = {"bm25": {"ndcg@10": 0.695, "p95_ms": 99.0}}
    drops = compare(current, baseline, tolerance=0.01)
    assert drops == ["vector ndcg@10: missing (baseline 0.6000)"]
    drops = compare({"bm25": {"ndcg@10": 0.68}}, {"bm25": {"ndcg@10": 0.70}}, 0.01)
    assert len(drops) == 1
    assert drops[0].startswith("bm25 ndcg@10")


def test_beir_loader_refuses_a_folder_without_the_split(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    with pytest.raises(InvalidInput, match=r"test\.tsv is missing"):
        BeirDataset.load(tmp_path, "test")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(InvalidInput, match="header"):
        BeirDataset.load(tmp_path, "test")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    with pytest.raises(InvalidInput, match="no text"):
        BeirDataset.load(tmp_path, "test")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    dataset = BeirDataset.load(tmp_path, "test")
    assert dataset.queries == {"q1": "x"}
    assert dataset.qrels == {"q1": {"d1": 1}}
    assert [d["_id"] for d in dataset.corpus()] == ["d1"]


def test_beir_loader_names_the_line_a_broken_file_breaks_at(tmp_path: Path) -> None:
    """A malformed line is an error naming its file and line, not a traceback; blank lines
    and numeric ids (some exports write them) are read."""
    (tmp_path / "qrels").mkdir()
    qrels = tmp_path / "qrels" / "test.tsv"
    (tmp_path / "queries.jsonl").write_text('{"_id": 1, "text": "x"}\n\n')
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "te\n')
    for broken in ("q\td1\n", "1\td1\tvery\n"):
        qrels.write_text(f"query-id\tcorpus-id\tscore\n{broken}")
        with pytest.raises(InvalidInput, match=r"test\.tsv line 2: not query-id"):
            BeirDataset.load(tmp_path, "test")
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n\n")
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl line 2: not a JSON object"):
        BeirDataset.load(tmp_path, "test")  # before any project is made
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n\n{"_id": 2}\n')
    dataset = BeirDataset.load(tmp_path, "test")
    assert dataset.queries == {"1": "x"}
    assert [d["_id"] for d in dataset.corpus()] == ["d1", "2"]
    assert dataset.documents == 2
    for query in ('{"text": "no id"}', '{"_id": "1", "text": 5}', "[1]"):
        (tmp_path / "queries.jsonl").write_text(query + "\n")
        with pytest.raises(InvalidInput, match=r"queries\.jsonl line 1"):
            BeirDataset.load(tmp_path, "test")
