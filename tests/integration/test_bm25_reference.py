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
from quarry.search.postings import pack
from quarry.search.service import ALL_CHUNKS
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
        held_back = corpus[-30:]  # indexed after the first pack
        for doc in corpus[: -len(held_back)]:
            await rt.documents.submit(project.id, _source(doc))
        async with background_worker(rt, "test"):
            assert (await settle(rt, project.id))["complete"] == len(corpus) - len(held_back)
        unpacked = await _compare_with_bm25s(rt, project.id, fresh_database, queries)

        # Packed into blocks (small ones, so terms span several), with what is left in
        # chunk_terms: the same answers, to the last bit.
        first = await pack(rt.db, project.id, block_size=7, min_postings=3)
        assert first.moved > 0
        assert first.blocks > 0
        with psycopg.connect(fresh_database) as conn:
            assert conn.execute("SELECT count(*) FROM chunk_terms").fetchone()[0] > 0
        assert await _compare_with_bm25s(rt, project.id, fresh_database, queries) == unpacked

        # New documents: a term's postings in blocks and in chunk_terms at once; then a
        # second pack moves them and merges each term's small blocks into one.
        for doc in held_back:
            await rt.documents.submit(project.id, _source(doc))
        async with background_worker(rt, "test"):
            assert (await settle(rt, project.id))["complete"] == len(corpus)
        grown = await _compare_with_bm25s(rt, project.id, fresh_database, queries)
        assert (await pack(rt.db, project.id, block_size=7, min_postings=3)).moved > 0
        with psycopg.connect(fresh_database) as conn:
            most_small = conn.execute(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM term_blocks"
                " WHERE postings < 7 GROUP BY term) x"
            ).fetchone()[0]
        assert most_small == 1
        assert await _compare_with_bm25s(rt, project.id, fresh_database, queries) == grown

        # Documents deleted after their postings were packed: searches leave them out and
        # count df without them, before and after the next pack takes them out of the blocks.
        for doc in corpus[:40]:
            await rt.documents.delete(project.id, await _document_id(fresh_database, doc["_id"]))
        with psycopg.connect(fresh_database) as conn:
            assert conn.execute("SELECT count(*) FROM packed_deletions").fetchone()[0] > 0
        pending = await _compare_with_bm25s(rt, project.id, fresh_database, queries)
        third = await pack(rt.db, project.id, block_size=7, min_postings=3)
        assert third.deletions > 0
        with psycopg.connect(fresh_database) as conn:
            assert conn.execute("SELECT count(*) FROM packed_deletions").fetchone()[0] == 0
        assert await _compare_with_bm25s(rt, project.id, fresh_database, queries) == pending


def _source(doc: dict):
    return text_source(
        f"{doc['title']}\n\n{doc['text']}",
        external_id=doc["_id"],
        title=doc["title"],
        fmt="txt",
        metadata={},
        tags=(),
    )


async def _document_id(database: str, external_id: str):
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT id FROM documents WHERE external_id = %s", (external_id,)
        ).fetchone()
    assert row is not None
    return row[0]


async def _compare_with_bm25s(rt, project_id, database: str, queries: list[str]) -> list:
    """Every query's BM25 run, read by one connection and by two (the same to the last
    bit), checked against bm25s over the project's chunks as they are now."""
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT c.id, t.lexeme, coalesce(array_length(t.positions, 1), 1) "
            "FROM chunks c LEFT JOIN LATERAL"
            " unnest(search_terms('english', indexed_text(c.context, c.text))) t "
            "ON TRUE WHERE c.project_id = %s ORDER BY c.id",
            (project_id,),
        ).fetchall()
    tokens: dict[int, list[str]] = {}
    for chunk_id, lexeme, tf in rows:
        tokens.setdefault(chunk_id, []).extend([lexeme] * tf if lexeme else [])
    chunk_ids = np.array(list(tokens))
    reference = bm25s.BM25(k1=K1, b=B, method="lucene")
    reference.index(list(tokens.values()), show_progress=False)

    runs = []
    for query in queries:
        prep = await rt.db.fetch_one("search.prepare", project_id=project_id, query=query)
        assert prep is not None
        terms = prep["terms"]
        if not terms:
            continue
        ours = await rt.search._bm25(project_id, terms, None, 1000, ALL_CHUNKS)
        # Read by two connections, each half of the chunk ids: the same, to the last bit.
        rt.search.config = replace(rt.search.config, bm25_split_chunks=1)
        ranges = rt.search.bm25_ranges(prep)
        rt.search.config = replace(rt.search.config, bm25_split_chunks=0)
        assert len(ranges) == 2 or prep["first_chunk"] == prep["last_chunk"], query
        split = await rt.search._bm25(project_id, terms, None, 1000, ranges)
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
        runs.append(ours)
    assert len(runs) >= QUERIES * 0.9
    return runs
