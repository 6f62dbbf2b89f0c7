"""quarry's BM25 (its parts in SQL, summed per chunk by quarry.search.bm25) against bm25s,
the reference implementation, on a SciFact slice.

Both score the same analysed terms (Postgres's english analyzer, read back from the chunks),
so any difference is in the BM25 arithmetic or statistics: N, document frequency, average
length, term frequency. bm25s's "lucene" variant drops the constant (k1 + 1) factor that
quarry keeps; rankings are unaffected and scores differ by exactly that factor.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import bm25s
import numpy as np
import psycopg

from quarry.ingest.documents import text_source
from quarry.runtime import background_worker, open_runtime
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.support import settle

SCIFACT = Path(__file__).resolve().parents[3] / "shared/datasets/scifact"
DOCUMENTS = 300
QUERIES = 60
K1, B = 1.2, 0.75


async def test_bm25_ranks_and_scores_as_bm25s_does(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    settings = ingest_settings.model_copy(update={"bm25_k1": K1, "bm25_b": B})
    with (SCIFACT / "corpus.jsonl").open() as fh:
        corpus = [json.loads(line) for line in itertools.islice(fh, DOCUMENTS)]
    with (SCIFACT / "queries.jsonl").open() as fh:
        queries = [json.loads(line)["text"] for line in itertools.islice(fh, QUERIES)]

    async with open_runtime(settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "scifact-slice")
        for doc in corpus:
            source = text_source(
                f"{doc['title']}\n\n{doc['text']}",
                external_id=doc["_id"],
                title=doc["title"],
                fmt="txt",
                metadata={},
                tags=(),
            )
            await rt.documents.submit(project.id, source)
        async with background_worker(rt, "test"):
            assert (await settle(rt, project.id))["complete"] == len(corpus)

        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute(
                "SELECT c.id, t.lexeme, coalesce(array_length(t.positions, 1), 1) "
                "FROM chunks c LEFT JOIN LATERAL"
                " unnest(to_tsvector('english', indexed_text(c.context, c.text))) t "
                "ON TRUE WHERE c.project_id = %s ORDER BY c.id",
                (project.id,),
            ).fetchall()
        tokens: dict[int, list[str]] = {}
        for chunk_id, lexeme, tf in rows:
            tokens.setdefault(chunk_id, []).extend([lexeme] * tf if lexeme else [])
        chunk_ids = np.array(list(tokens))
        reference = bm25s.BM25(k1=K1, b=B, method="lucene")
        reference.index(list(tokens.values()), show_progress=False)

        compared = 0
        for query in queries:
            prep = await rt.db.fetch_one("search.prepare", project_id=project.id, query=query)
            assert prep is not None
            terms = prep["terms"]
            if not terms:
                continue
            ours = await rt.search._bm25(project.id, terms, None, 1000, chunks=0)
            # Read by two connections, each half of the chunk ids: the same, to the last bit.
            rt.search.config = replace(rt.search.config, bm25_split_chunks=1)
            split = await rt.search._bm25(project.id, terms, None, 1000, chunks=1)
            rt.search.config = replace(rt.search.config, bm25_split_chunks=0)
            assert split == ours, query
            expected = reference.get_scores(terms) * (K1 + 1)
            matching = np.flatnonzero(expected > 0)
            # The same set of chunks is scored...
            assert {c.chunk_id for c in ours} == set(chunk_ids[matching].tolist()), query
            # ...with the same scores (bm25s computes in float32)...
            for candidate in ours:
                index = int(np.flatnonzero(chunk_ids == candidate.chunk_id)[0])
                difference = abs(candidate.score - float(expected[index]))
                assert difference <= 1e-4 * max(1.0, candidate.score), query
            # ...so the same ranking, up to ties.
            top = [c.score for c in ours[:10]]
            assert np.allclose(top, np.sort(expected)[::-1][: len(top)], rtol=1e-4), query
            compared += 1
        assert compared >= QUERIES * 0.9
