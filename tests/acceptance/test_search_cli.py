"""`quarry search` and `quarry eval beir` as a user runs them: real processes, real model."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import quarry_env, run_cli

CORPUS = {
    # Brackets that rich would read as a closing markup tag: the table must show them as text.
    "d1": ("Solar power [/pv]", "Photovoltaic panels convert sunlight into electricity."),
    "d2": ("Wind power", "Turbines turn wind into electricity offshore and on land."),
    "d3": ("Sourdough", "A starter ferments flour and water; the bread rises overnight."),
    "d4": ("Coal", "Coal plants burn coal to make electricity and emit carbon dioxide."),
    "d5": ("Tides", "Tidal lagoons use the rise and fall of the sea to drive turbines."),
}
QUERIES = {"q1": ("sunlight panels", "d1"), "q2": ("baking bread", "d3"), "q3": ("sea tides", "d5")}


def beir_folder(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in CORPUS.items()
        )
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items())
    )
    return root


def test_eval_beir_reports_every_mode_and_guards_a_baseline(
    fresh_database: str, tmp_path: Path
) -> None:
    env = quarry_env(database_url=fresh_database, data_dir=tmp_path / "data")
    dataset = beir_folder(tmp_path / "tiny")
    figures_file = tmp_path / "eval.json"
    result = run_cli(
        "eval", "beir", str(dataset), "--split", "test", "--json", str(figures_file),
        env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ndcg@10" in result.stdout
    figures = json.loads(figures_file.read_text())
    assert figures["documents"] == len(CORPUS)
    assert figures["queries"] == len(QUERIES)
    # By default hybrid runs with its rerank stage (late interaction with the bundled model),
    # beside the fusion without it and plain RRF; bm25 and vector are never reranked.
    assert set(figures["modes"]) == {"bm25", "vector", "hybrid", "hybrid_fused", "hybrid_rrf"}
    for mode, values in figures["modes"].items():
        assert set(values) == {"ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms"}
        assert values["recall@100"] == 1.0, mode  # five documents: everything is found
    assert figures["modes"]["bm25"]["mrr@10"] == 1.0  # each query names its document's words
    assert figures["reranker"] == "late_interaction"
    assert figures["rerank_depth"] == 20

    # The same figures as a baseline pass; a baseline better than reality fails with exit 1.
    project = next(p for p in _projects(env) if p.startswith("beir-tiny-test"))
    same = run_cli(
        "eval", "beir", str(dataset), "--project", project, "--baseline", str(figures_file),
        "--mode", "bm25", env=env, timeout=300,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr
    better = json.loads(figures_file.read_text())
    better["modes"]["bm25"]["ndcg@10"] = 1.5
    better_file = tmp_path / "better.json"
    better_file.write_text(json.dumps(better))
    worse = run_cli(
        "eval", "beir", str(dataset), "--project", project, "--baseline", str(better_file),
        "--mode", "bm25", env=env, timeout=300,
    )  # fmt: skip
    assert worse.returncode == 1
    assert "regression: bm25 ndcg@10" in worse.stderr

    # With the rerank stage turned off, hybrid is the fusion alone.
    fused_file = tmp_path / "fused.json"
    fused = run_cli(
        "eval", "beir", str(dataset), "--project", project, "--mode", "hybrid",
        "--json", str(fused_file), env={**env, "QUARRY_RERANKER": "none"}, timeout=300,
    )  # fmt: skip
    assert fused.returncode == 0, fused.stderr
    figures = json.loads(fused_file.read_text())
    assert figures["reranker"] is None
    assert figures["rerank_depth"] is None
    assert set(figures["modes"]) == {"hybrid", "hybrid_rrf"}
    assert figures["modes"]["hybrid"]["recall@100"] == 1.0

    missing = run_cli("eval", "beir", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 1
    assert "corpus.jsonl is missing" in missing.stderr

    # The loaded project answers `quarry search` with a readable table, and JSON on request.
    table = run_cli("search", "sunlight panels", "--project", project, "-k", "3", env=env)
    assert table.returncode == 0, table.stderr
    assert "Solar power [/pv]" in table.stdout
    assert "hybrid" in table.stdout
    as_json = run_cli(
        "search", "sunlight panels", "--project", project, "--mode", "bm25", "--json", env=env
    )
    hits = json.loads(as_json.stdout)["hits"]
    assert hits[0]["external_id"] == "d1"
    blank = run_cli("search", "   ", "--project", project, env=env)
    assert blank.returncode == 1
    assert "blank" in blank.stderr


def _projects(env: dict[str, str]) -> list[str]:
    listed = run_cli("projects", "list", "--json", env=env)
    return [p["name"] for p in json.loads(listed.stdout)]
