"""Packing postings in the background: the indexing job queues a pack once enough chunks
have been written since the last one, the pack moves a term's postings into blocks, and a
search finds the same before and after."""

from __future__ import annotations

import asyncio

import psycopg

from quarry.ingest.documents import text_source
from quarry.jobs.tasks import PACK_POSTINGS
from quarry.runtime import background_worker, open_runtime
from quarry.search.models import Mode, SearchRequest
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.support import settle

# "solar" and "kilowatt" are in every document: the terms packed.
TEXTS = [f"Solar panel number {n} faces south; its output is {n} kilowatts." for n in range(6)]


async def test_indexing_queues_a_pack_that_moves_common_terms_into_blocks(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    # A pack is due once 4 chunks have been written since the last (partway through), and
    # packs the terms with 4 postings or more in rows.
    settings = ingest_settings.model_copy(
        update={"bm25_pack_chunks": 4, "bm25_pack_min_postings": 4}
    )
    async with open_runtime(settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "packed")
        for n, text in enumerate(TEXTS):
            source = text_source(
                text, external_id=f"d{n}", title="", fmt="txt", metadata={}, tags=()
            )
            await rt.documents.submit(project.id, source)
        request = SearchRequest(query="solar kilowatts", mode=Mode.bm25, k=10)
        async with background_worker(rt, "test"):
            await settle(rt, project.id)
            with psycopg.connect(fresh_database) as conn:
                for _ in range(200):  # the pack job runs after the indexing job that queued it
                    done = conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs"
                        " WHERE task_name = %s AND status = 'succeeded'",
                        (PACK_POSTINGS,),
                    ).fetchone()
                    if done and done[0] >= 1:
                        break
                    await asyncio.sleep(0.05)
                assert done is not None
                assert done[0] >= 1
                blocks = conn.execute(
                    "SELECT term, postings FROM term_blocks WHERE project_id = %s",
                    (project.id,),
                ).fetchall()
                fresh_solar = conn.execute(
                    "SELECT count(*) FROM chunk_terms WHERE project_id = %s AND term = 'solar'",
                    (project.id,),
                ).fetchone()
            packed = await rt.search.search(project.id, request)
        assert {term for term, _ in blocks} >= {"solar"}
        # Postings written after the pack stay in chunk_terms until the next one.
        assert sum(n for term, n in blocks if term == "solar") + fresh_solar[0] == len(TEXTS)
        assert len(packed.hits) == len(TEXTS)

        # The answer read from blocks is the one read from rows: unpack (as a change of
        # analyzer does before writing every posting anew) and search again.
        async with rt.db.transaction() as conn:
            await rt.db.execute("postings.unpack", conn, project_id=project.id)
            await rt.db.execute("chunks.drop_postings", conn, project_id=project.id)
            await rt.db.fetch_one(
                "chunks.reanalyse", conn, project_id=project.id, analyzer="english"
            )
        unpacked = await rt.search.search(project.id, request)
        assert [(h.chunk_id, h.score) for h in unpacked.hits] == [
            (h.chunk_id, h.score) for h in packed.hits
        ]
