"""Jobs that outlive their worker or their document's version: stalled runs taken over once
and failed when spent, a failing job that gives way to a newer one queued for the same
document, and a stopping worker that stops its jobs in time and queues them again."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from quarry.ingest.documents import text_source
from quarry.runtime import Runtime, background_worker
from quarry.testing import HeldEmbedder
from tests.conftest import bearer
from tests.support import settle


def _jobs(url: str, document_id: uuid.UUID) -> list[tuple[int, str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, status::text, attempts FROM procrastinate_jobs "
            "WHERE args->>'document_id' = %s ORDER BY id",
            (str(document_id),),
        ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def _stall(url: str, job_id: int, attempts: int) -> None:
    """The job as a worker that died mid-run leaves it: doing, its worker silent for an
    hour, its document claimed."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s, attempts = %s "
            "WHERE id = %s",
            (row[0], attempts, job_id),
        )
        conn.execute(
            "UPDATE documents SET status = 'indexing' WHERE id = "
            "(SELECT (args->>'document_id')::uuid FROM procrastinate_jobs WHERE id = %s)",
            (job_id,),
        )


async def _document(rt: Runtime, project: uuid.UUID, text: str) -> uuid.UUID:
    submitted = await rt.documents.submit(
        project, text_source(text, external_id="doc", title="", fmt="txt", metadata={}, tags=())
    )
    return submitted.document.id


async def _stalled(
    rt: Runtime, project: uuid.UUID, url: str, text: str, attempts: int
) -> tuple[uuid.UUID, int]:
    """A new document whose job a dead worker left after ``attempts`` runs before this one."""
    document = await _document(rt, project, text)
    [(job, _, _)] = _jobs(url, document)
    _stall(url, job, attempts)
    return document, job


@pytest.fixture
async def project(ingest_runtime: Runtime, admin_principal) -> uuid.UUID:
    made = await ingest_runtime.projects.create(admin_principal, "recovery")
    return made.id


async def test_a_job_whose_every_run_died_fails_instead_of_killing_the_next_worker(
    ingest_runtime: Runtime, project: uuid.UUID, fresh_database: str
) -> None:
    rt = ingest_runtime
    document, job = await _stalled(  # in its last run
        rt,
        project,
        fresh_database,
        "A document whose worker keeps dying.",
        attempts=rt.settings.ingest_max_attempts - 1,
    )
    assert await rt.jobs.recover(stalled_after=1) == 0
    # Every run counted, the one that died included.
    assert _jobs(fresh_database, document) == [(job, "failed", rt.settings.ingest_max_attempts)]
    failed = await rt.documents.get(project, document)
    assert (failed.status, failed.error_code) == ("failed", "worker_lost")


async def test_a_stalled_job_gives_way_to_a_newer_one_queued_for_its_document(
    ingest_runtime: Runtime, project: uuid.UUID, fresh_database: str
) -> None:
    rt = ingest_runtime
    document, first = await _stalled(rt, project, fresh_database, "The first version.", 0)
    await _document(rt, project, "The second version, submitted while the first ran.")
    [_, (second, status, _)] = _jobs(fresh_database, document)
    assert status == "todo"
    await rt.jobs.recover(stalled_after=1)  # retrying the first would clash with the second
    assert _jobs(fresh_database, document) == [(first, "failed", 1), (second, "todo", 0)]
    async with background_worker(rt, "test"):
        assert (await settle(rt, project))["failed"] == 0
    assert _jobs(fresh_database, document)[1][1] == "succeeded"


async def test_one_process_recovers_at_a_time(
    ingest_runtime: Runtime, project: uuid.UUID, fresh_database: str
) -> None:
    rt = ingest_runtime
    document, job = await _stalled(rt, project, fresh_database, "Taken over once.", 0)
    async with await psycopg.AsyncConnection.connect(fresh_database) as other:
        await other.execute("SELECT pg_advisory_xact_lock(hashtextextended('quarry:recover', 0))")
        assert await rt.jobs.recover(stalled_after=1) == 0  # another process is at it
        assert _jobs(fresh_database, document) == [(job, "doing", 0)]
    assert await rt.jobs.recover(stalled_after=1) == 1
    assert _jobs(fresh_database, document) == [(job, "todo", 1)]


async def test_a_failing_job_gives_way_to_a_newer_version_queued_meanwhile(
    ingest_client: httpx.AsyncClient, ingest_runtime: Runtime, admin, fresh_database: str
) -> None:
    rt = ingest_runtime
    held = HeldEmbedder(rt.pipeline.embedder, failures=1)
    rt.pipeline.embedder = held
    key = bearer(admin.api_key.secret)
    made = await ingest_client.post("/projects", json={"name": "versions"}, headers=key)
    project = uuid.UUID(made.json()["id"])
    url = "/projects/versions/documents/text"
    first = await ingest_client.post(
        url, json={"text": "Version one.", "external_id": "v"}, headers=key
    )
    document = uuid.UUID(first.json()["document"]["id"])
    await asyncio.wait_for(held.entered.wait(), 30)  # the first version is being indexed
    second = await ingest_client.post(
        url, json={"text": "Version two.", "external_id": "v"}, headers=key
    )
    assert second.status_code == 202, second.text
    held.release.set()  # the first run fails (transient) with the second version queued
    assert (await asyncio.wait_for(settle(rt, project), 60))["failed"] == 0
    assert (await rt.documents.get(project, document)).status == "complete"
    chunks = await ingest_client.get(f"/projects/versions/documents/{document}/chunks", headers=key)
    assert [c["text"] for c in chunks.json()] == ["Version two."]
    assert [s for _, s, _ in _jobs(fresh_database, document)] == ["succeeded", "succeeded"]


async def test_a_stopping_worker_stops_its_jobs_in_time_and_queues_them_again(
    ingest_settings, embedder, fresh_database: str, admin_principal
) -> None:
    from quarry.runtime import open_runtime

    settings = ingest_settings.model_copy(update={"worker_shutdown_timeout": 0.5})
    async with open_runtime(settings, embedder=embedder) as rt:
        project = (await rt.projects.create(admin_principal, "draining")).id
        held = HeldEmbedder(rt.pipeline.embedder)  # never released: the job runs on and on
        rt.pipeline.embedder = held
        document = await _document(rt, project, "A long job.")
        worker = asyncio.create_task(rt.run_worker(install_signal_handlers=False))
        await asyncio.wait_for(held.entered.wait(), 30)
        worker.cancel()  # what serve's shutdown does
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(worker, 10)  # after the drain, not when the job would end
        [(_, status, attempts)] = _jobs(fresh_database, document)
        assert (status, attempts) == ("todo", 1)  # queued again for the next worker


async def test_a_project_due_a_pack_gets_one_queued_while_it_stays_due(
    ingest_runtime: Runtime, project: uuid.UUID, fresh_database: str
) -> None:
    """A re-analysis (an analyzer change, migration 0016) unpacks a whole project and no write
    need follow to queue its pack: recovery queues one, once while the project stays due."""
    rt = ingest_runtime

    def since_pack(chunks: int) -> None:
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO lexical_stats (project_id, chunk_count, term_count, "
                "chunks_since_pack) VALUES (%s, %s, 0, %s) ON CONFLICT (project_id) "
                "DO UPDATE SET chunks_since_pack = excluded.chunks_since_pack",
                (project, chunks, chunks),
            )

    def packs() -> list[tuple[int, str]]:
        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute(
                "SELECT id, status::text FROM procrastinate_jobs "
                "WHERE task_name = 'quarry:pack_postings' AND args->>'project_id' = %s "
                "ORDER BY id",
                (str(project),),
            ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    async def recover() -> None:
        assert await rt.jobs.recover(stalled_after=1, pack_after_chunks=5) == 0

    since_pack(4)
    await recover()
    assert packs() == []  # not due
    since_pack(5)
    assert await rt.jobs.recover(stalled_after=1) == 0
    assert packs() == []  # pack_after_chunks 0: never packs
    await recover()
    [(first, status)] = packs()
    assert status == "todo"
    await recover()
    assert packs() == [(first, "todo")]  # queued already
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (first,))
    await recover()
    assert packs() == [(first, "failed")]  # failed for good: not queued again while due
    since_pack(0)  # packed by a later write's pack...
    await recover()
    since_pack(5)  # ...and unpacked again by an analyzer change
    await recover()
    assert [status for _, status in packs()] == ["failed", "todo"]
