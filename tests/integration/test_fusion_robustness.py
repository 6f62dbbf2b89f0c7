"""Hybrid search must not lose to the better of its retrievers when one of them is weak.

A SciFact slice (the documents relevant to 80 test queries, plus distractors) is indexed with
a deliberately weak dense side: HashEmbedder, a bag of hashed words in 64 dimensions, which
ranks close to noise. Equal-weight rank fusion lets that noise displace good BM25 hits; the
default fusion must hold BM25's quality.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from quarry.runtime import background_worker, open_runtime
from quarry.search.beir import evaluate, load_corpus
from quarry.search.evaluate import BeirDataset
from quarry.search.models import Mode
from quarry.settings import Settings
from quarry.testing import HashEmbedder

SCIFACT = Path(__file__).resolve().parents[3] / "shared/datasets/scifact"
QUERIES = 80
DISTRACTORS = 500


def scifact_slice(folder: Path) -> Path:
    with (SCIFACT / "qrels/test.tsv").open() as fh:
        lines = fh.read().splitlines()
    qrels: dict[str, list[str]] = {}
    for line in lines[1:]:
        query_id, doc_id, _ = line.split("\t")
        qrels.setdefault(query_id, []).append(doc_id)
    chosen = dict(itertools.islice(qrels.items(), QUERIES))
    wanted = {doc for docs in chosen.values() for doc in docs}
    with (SCIFACT / "corpus.jsonl").open() as fh:
        corpus = [json.loads(line) for line in fh]
    others = [d for d in corpus if d["_id"] not in wanted]
    keep = [d for d in corpus if d["_id"] in wanted]
    keep += random.Random(3).sample(others, DISTRACTORS)
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
    with (SCIFACT / "queries.jsonl").open() as fh:
        queries = [q for q in map(json.loads, fh) if q["_id"] in chosen]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = [f"{q}\t{d}\t1" for q, docs in chosen.items() for d in docs]
    (folder / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows))
    return folder


async def test_hybrid_holds_bm25s_quality_when_the_dense_side_is_weak(
    ingest_settings: Settings, admin_principal, tmp_path: Path
) -> None:
    dataset = BeirDataset.load(scifact_slice(tmp_path / "slice"), "test")
    async with open_runtime(ingest_settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "weak-dense")
        async with background_worker(rt, "test"):
            loaded = await load_corpus(rt, project.id, dataset)
        assert loaded.failed == 0
        figures = await evaluate(
            rt, project.id, dataset, [Mode.bm25, Mode.vector, Mode.hybrid], candidates=100
        )
    ndcg = {mode: values["ndcg@10"] for mode, values in figures.items()}
    assert ndcg["vector"] < ndcg["bm25"] - 0.3, ndcg  # the dense side really is weak
    assert ndcg["hybrid_rrf"] < ndcg["bm25"] - 0.05, ndcg  # and plain RRF suffers for it
    assert ndcg["hybrid"] >= ndcg["bm25"] - 0.01, ndcg  # the default fusion does not
