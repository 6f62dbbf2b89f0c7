"""Vector search stays exact when HNSW leaves too few rows, however often it has run.

HNSW filters after it searches, so a small project in a table of a bigger one gets fewer
rows from the index than it asked for, and the search answers from an exact scan instead.
That scan was once the same statement with the index switched off by a setting, which holds
only until psycopg prepares the statement (its fifth run on a connection): from then on
Postgres reused the cached index plan and the "exact" answer was the same short one."""

from __future__ import annotations

import numpy as np

from quarry.runtime import open_runtime
from quarry.search.filters import compile_filters
from quarry.search.models import Filters, Mode, Range, SearchRequest
from quarry.settings import Settings
from quarry.testing import HashEmbedder

DIMS = 64
SIZE = (
    20_000  # large enough that a search 3 to 6 times as wide compares fewer vectors than it holds
)


async def _load(rt, project_id, vectors: np.ndarray, model: str) -> None:
    n = len(vectors)
    async with rt.db.transaction() as conn:
        await conn.execute(
            """
            WITH docs AS (
                INSERT INTO documents (project_id, external_id, source_kind, source, title,
                                       format, content_hash, size_bytes, status, metadata)
                SELECT %(p)s, 'v' || i, 'text', 'test', 'v' || i, 'txt', md5('v' || i), 1,
                       'complete', jsonb_build_object('i', i)
                FROM generate_series(0, %(n)s - 1) AS i
                RETURNING id, external_id
            ), made AS (
                INSERT INTO chunks (project_id, document_id, chunk_index, text, char_start,
                                    char_end, token_count, content_hash, term_count)
                SELECT %(p)s, d.id, 0, d.external_id, 0, 2, 1,
                       sha256(convert_to(d.external_id, 'UTF8')), 1
                FROM docs d
                RETURNING id, text
            )
            INSERT INTO chunk_embeddings (chunk_id, project_id, model, embedding)
            SELECT m.id, %(p)s, %(model)s, x.v
            FROM unnest(%(v)s::vector[]) WITH ORDINALITY AS x(v, i)
            JOIN made m ON m.text = 'v' || (x.i - 1)
            """,
            {"p": project_id, "n": n, "v": list(vectors), "model": model},
        )


async def test_a_small_project_beside_a_big_one_gets_its_exact_neighbours_every_time(
    ingest_settings: Settings, admin_principal
) -> None:
    embedder = HashEmbedder(dimensions=DIMS)
    rng = np.random.default_rng(5)

    def unit(rows: int) -> np.ndarray:
        v = rng.standard_normal((rows, DIMS)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        small = await rt.projects.create(admin_principal, "small")
        big = await rt.projects.create(admin_principal, "big")
        mine = unit(30)
        await _load(rt, small.id, mine, embedder.model_id)
        await _load(rt, big.id, unit(600), embedder.model_id)
        await rt.search.indexes.ensure(embedder.model_id, DIMS)
        async with rt.db.pool.connection() as conn:
            await conn.execute("ANALYZE chunk_embeddings")
            rows = await (
                await conn.execute(
                    "SELECT c.id, c.text, c.document_id FROM chunks c WHERE c.project_id = %s",
                    (small.id,),
                )
            ).fetchall()
        chunk_of = {row["text"]: row["id"] for row in rows}
        document_of = {row["text"]: row["document_id"] for row in rows}
        assert len(chunk_of) == 30
        kept = [i for i in range(30) if i % 3]  # a filter that keeps 20 of the 30 documents
        only_kept = compile_filters(Filters(document_ids=[document_of[f"v{i}"] for i in kept]))

        for n in range(24):  # enough runs for every pooled connection to prepare both
            query = f"query number {n} about topic {n % 7}"
            vector = await embedder.embed_query(query)
            nearest = [int(i) for i in np.argsort(-(mine @ vector))]
            run = await rt.search._vector(small.id, rt.search._embed(query, {}), None, 20, {})
            assert [c.chunk_id for c in run] == [chunk_of[f"v{i}"] for i in nearest[:20]], n
            assert [c.document_id for c in run] == [document_of[f"v{i}"] for i in nearest[:20]]
            filtered = await rt.search._vector(
                small.id, rt.search._embed(query, {}), only_kept, 12, {}
            )
            expected = [chunk_of[f"v{i}"] for i in nearest if i in kept][:12]
            assert [c.chunk_id for c in filtered] == expected, n


async def test_a_filter_that_thins_the_nearest_widens_the_hnsw_search_before_any_exact_scan(
    ingest_settings: Settings, admin_principal
) -> None:
    """Half of a large project passes the filter: HNSW's 100 nearest hold about 50 of the
    100 asked for, so it searches again about three times as wide (cheaper than reading
    every vector); a filter that passes 1% would need more than HNSW's widest search, and
    is ranked exactly."""
    embedder = HashEmbedder(dimensions=DIMS)
    rng = np.random.default_rng(9)
    # Clustered, as embeddings are: 200 topics, each vector near its topic's.
    topics = rng.standard_normal((200, DIMS)).astype(np.float32)
    vectors = topics[np.arange(SIZE) % 200] + 0.5 * rng.standard_normal((SIZE, DIMS)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        project = await rt.projects.create(admin_principal, "large")
        await _load(rt, project.id, vectors, embedder.model_id)
        async with rt.db.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO lexical_stats (project_id, chunk_count, term_count)"
                " VALUES (%s, %s, %s)",
                (project.id, SIZE, SIZE),
            )
        await rt.search.indexes.ensure(embedder.model_id, DIMS)
        async with rt.db.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT id, text FROM chunks WHERE project_id = %s", (project.id,)
                )
            ).fetchall()
            chunk_of = {row["id"]: row["text"] for row in rows}  # its text: v and its index
            await conn.execute("ANALYZE chunk_embeddings")
            await conn.execute("ANALYZE documents")
            await conn.execute("ANALYZE chunks")
        half = Filters(metadata={"i": Range(lt=SIZE // 2)})
        narrow = Filters(metadata={"i": Range(lt=50)})
        cases = ((None, SIZE, "hnsw"), (half, SIZE // 2, "hnsw_widened"), (narrow, 50, "exact"))
        for topic in (3, 117):
            query = topics[topic] / np.linalg.norm(topics[topic])
            nearest = np.argsort(-(vectors @ query))
            for filters, passing, scan in cases:
                scans: dict[str, str] = {}
                run = await rt.search._vector(
                    project.id, _ready(query), compile_filters(filters), 100, {}, SIZE, scans
                )
                assert scans == {"vector": scan}, (topic, filters)
                found = [int(chunk_of[c.chunk_id][1:]) for c in run]
                exact = [int(i) for i in nearest if i < passing][:100]
                assert len(found) == len(exact)
                assert all(i < passing for i in found)
                # HNSW is approximate: nearly all of the exact neighbours, either way.
                assert len(set(found) & set(exact)) >= 0.9 * len(exact), (topic, filters)
                if scan == "exact":
                    assert found == exact
        # The response says how the vector retriever answered.
        for filters, scan in ((None, "hnsw"), (narrow, "exact")):
            request = SearchRequest(query="any query", mode=Mode.vector, k=100, filters=filters)
            response = await rt.search.search(project.id, request)
            assert response.search_metadata.vector_scan == scan


async def _ready(vector: np.ndarray) -> np.ndarray:
    return vector
