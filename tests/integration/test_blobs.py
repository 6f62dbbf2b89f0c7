"""Both blob stores keep a batch of documents' bytes, once each, until no document uses them:
a new version's old bytes, a failed batch's, a deleted document's or project's go."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from pathlib import Path

import psycopg
import pytest

from quarry.db.database import Conn
from quarry.errors import ProjectNotFound
from quarry.ingest import blobs as blobs_module
from quarry.ingest.blobs import BlobMissing, BlobStore, FileBlobStore, PostgresBlobStore
from quarry.ingest.documents import Documents
from quarry.ingest.models import Submission
from quarry.ingest.source import Source
from quarry.runtime import Runtime, background_worker, open_runtime
from quarry.settings import Settings
from quarry.tenancy.models import Principal
from quarry.tenancy.projects import Projects


@pytest.fixture(params=["file", "postgres"])
def store(request: pytest.FixtureRequest, runtime: Runtime, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FileBlobStore(tmp_path / "blobs")
    return PostgresBlobStore(runtime.db)


async def test_a_batch_is_kept_once_and_read_back(
    store: FileBlobStore | PostgresBlobStore, runtime: Runtime, admin_principal: Principal
) -> None:
    project = await runtime.projects.create(admin_principal, "blobs")
    data = [b"first", b"second", b"\x00binary\xff"]
    blobs = {hashlib.sha256(d).hexdigest(): d for d in data}
    await store.put_many(project.id, blobs)
    await store.put_many(project.id, blobs)  # again: nothing changes, nothing fails
    for content_hash, expected in blobs.items():
        assert await store.get(project.id, content_hash) == expected
    gone = next(iter(blobs))
    await store.delete_many(project.id, [gone])
    with pytest.raises(BlobMissing):
        await store.get(project.id, gone)
    await store.put_many(project.id, {})  # an empty batch is no work


class Passing:
    """A real store passed through: the base of the stores below, which each step in at one
    moment of a submission or a job."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    async def put_many(
        self, project_id: uuid.UUID, blobs: Mapping[str, bytes], *, conn: Conn | None = None
    ) -> None:
        await self.inner.put_many(project_id, blobs, conn=conn)

    async def get(self, project_id: uuid.UUID, content_hash: str) -> bytes:
        return await self.inner.get(project_id, content_hash)

    async def delete_many(
        self, project_id: uuid.UUID, content_hashes: Collection[str], *, conn: Conn | None = None
    ) -> None:
        await self.inner.delete_many(project_id, content_hashes, conn=conn)

    async def delete_project(self, project_id: uuid.UUID) -> None:
        await self.inner.delete_project(project_id)

    async def scan(self, project_id: uuid.UUID) -> AsyncIterator[list[str]]:
        async for batch in self.inner.scan(project_id):
            yield batch


class Gate(Passing):
    """A real store whose put_many waits, once its bytes are kept, until it is let go: the
    moment between a submission keeping its bytes and committing its documents."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.kept = asyncio.Event()
        self.go = asyncio.Event()

    async def put_many(
        self, project_id: uuid.UUID, blobs: Mapping[str, bytes], *, conn: Conn | None = None
    ) -> None:
        await self.inner.put_many(project_id, blobs, conn=conn)
        self.kept.set()
        await self.go.wait()


async def waiting_on_a_lock(runtime: Runtime, task: asyncio.Task[object]) -> None:
    """Return once a statement waits for a lock in Postgres; fail if ``task`` ends first."""
    for _ in range(400):
        assert not task.done(), "it finished without waiting"
        async with runtime.db.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM pg_locks WHERE NOT granted")
            row = await cur.fetchone()
        if row is not None and row["n"] > 0:
            assert not task.done()
            return
        await asyncio.sleep(0.025)
    raise AssertionError("nothing waited for a lock within 10 s")


def documents_over(runtime: Runtime, store: BlobStore) -> Documents:
    """The runtime's document service, keeping bytes in ``store``."""
    given = runtime.documents
    return Documents(given.db, store, given.registry, given.queue, max_bytes=given.max_bytes)


def text(name: str, data: bytes) -> Source:
    return Source(data=data, name=name, external_id=name, kind="upload")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def kept(store: BlobStore, project_id: uuid.UUID, data: bytes) -> bool:
    try:
        return await store.get(project_id, digest(data)) == data
    except BlobMissing:
        return False


async def test_bytes_no_document_uses_are_deleted(
    store: BlobStore, runtime: Runtime, admin_principal: Principal, fresh_database: str
) -> None:
    documents = documents_over(runtime, store)
    project = await runtime.projects.create(admin_principal, "versions")
    await documents.submit_many(
        project.id, [text("a.txt", b"one"), text("b.txt", b"shared"), text("c.txt", b"shared")]
    )
    await documents.submit(project.id, text("a.txt", b"two"))  # a new version
    assert not await kept(store, project.id, b"one")
    assert await kept(store, project.id, b"two")
    await documents.submit(project.id, text("b.txt", b"other"))
    assert await kept(store, project.id, b"shared")  # c.txt still has it
    # One external id twice in a batch: the first version's bytes are used by nothing.
    await documents.submit_many(project.id, [text("d.txt", b"first"), text("d.txt", b"last")])
    assert not await kept(store, project.id, b"first")
    assert await kept(store, project.id, b"last")

    # A batch whose write fails keeps nothing it brought, and deletes nothing it did not.
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE documents ADD CONSTRAINT no_poison CHECK (title <> 'poison')")
    poisoned = Source(data=b"new", name="e.txt", external_id="e.txt", kind="upload", title="poison")
    with pytest.raises(psycopg.errors.CheckViolation):
        await documents.submit_many(project.id, [text("f.txt", b"two"), poisoned])
    assert not await kept(store, project.id, b"new")
    assert await kept(store, project.id, b"two")  # a.txt's

    (c,) = [d for d in await documents.list_page(project.id) if d.external_id == "c.txt"]
    await documents.delete(project.id, c.id)
    assert not await kept(store, project.id, b"shared")


async def test_a_submission_racing_a_delete_of_the_same_content_keeps_its_bytes(
    store: BlobStore, runtime: Runtime, admin_principal: Principal
) -> None:
    project = await runtime.projects.create(admin_principal, "race")
    (first,) = await documents_over(runtime, store).submit_many(
        project.id, [text("a.txt", b"same")]
    )
    assert isinstance(first, Submission)
    gate = Gate(store)
    # b.txt brings the same bytes (already kept) and stops before its document is written,
    # while a.txt, their only user so far, is deleted.
    submitting = asyncio.create_task(
        documents_over(runtime, gate).submit(project.id, text("b.txt", b"same"))
    )
    await asyncio.wait_for(gate.kept.wait(), 10)
    deleting = asyncio.create_task(
        documents_over(runtime, store).delete(project.id, first.document.id)
    )
    await waiting_on_a_lock(runtime, deleting)  # without the lock it would be done by now
    gate.go.set()
    await asyncio.wait_for(asyncio.gather(submitting, deleting), 10)
    assert await kept(store, project.id, b"same")


async def test_deleting_a_project_deletes_its_bytes(
    store: BlobStore, runtime: Runtime, admin_principal: Principal, tmp_path: Path
) -> None:
    documents = documents_over(runtime, store)
    projects = Projects(runtime.db, runtime.projects.users, store)
    gone = await projects.create(admin_principal, "gone")
    stays = await projects.create(admin_principal, "stays")
    for project in (gone, stays):
        await documents.submit(project.id, text("a.txt", b"bytes"))
    await projects.delete(admin_principal, "gone")
    assert not await kept(store, gone.id, b"bytes")
    assert await kept(store, stays.id, b"bytes")
    if isinstance(store, FileBlobStore):
        assert [p.name for p in (tmp_path / "blobs").iterdir()] == [str(stays.id)]
    assert await runtime.db.fetch_all("projects.deleted") == []  # nothing left for the sweep


class Replacing(Passing):
    """A real store that, when a job reads a document's bytes, first has ``meanwhile`` run:
    a new version submitted, or the document deleted, between the job's claim and its read."""

    def __init__(self, inner: BlobStore, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__(inner)
        self.meanwhile = meanwhile

    async def get(self, project_id: uuid.UUID, content_hash: str) -> bytes:
        await self.meanwhile()
        return await self.inner.get(project_id, content_hash)


async def test_a_job_whose_bytes_went_with_a_new_version_or_a_delete_stands_down(
    ingest_runtime: Runtime, admin_principal: Principal
) -> None:
    rt = ingest_runtime
    assert rt.pipeline is not None
    project = await rt.projects.create(admin_principal, "superseded")
    first = await rt.documents.submit(project.id, text("a.txt", b"version one"))
    store = rt.pipeline.blobs
    rt.pipeline.blobs = Replacing(
        store, lambda: rt.documents.submit(project.id, text("a.txt", b"version two"))
    )
    try:
        outcome = await rt.pipeline.index(project.id, first.document.id)
        assert outcome.status == "superseded"
        assert not await kept(store, project.id, b"version one")
        rt.pipeline.blobs = Replacing(
            store, lambda: rt.documents.delete(project.id, first.document.id)
        )
        assert (await rt.pipeline.index(project.id, first.document.id)).status == "gone"
    finally:
        rt.pipeline.blobs = store


async def test_a_job_whose_version_was_retitled_meanwhile_stands_down(
    ingest_runtime: Runtime, admin_principal: Principal
) -> None:
    """The same bytes under a new title are a new version (its chunks carry the title): the
    job of the old one must not write, or the new one's job would find it indexed."""
    rt = ingest_runtime
    assert rt.pipeline is not None
    project = await rt.projects.create(admin_principal, "retitled")
    body = b"Rivers carry water to the sea. " * 60

    def titled(title: str) -> Source:
        return Source(data=body, name="a.txt", external_id="a.txt", kind="upload", title=title)

    first = await rt.documents.submit(project.id, titled("Old title"))
    store = rt.pipeline.blobs
    rt.pipeline.blobs = Replacing(store, lambda: rt.documents.submit(project.id, titled("New")))
    try:
        assert (await rt.pipeline.index(project.id, first.document.id)).status == "superseded"
    finally:
        rt.pipeline.blobs = store
    assert (await rt.pipeline.index(project.id, first.document.id)).status == "indexed"
    document = await rt.documents.get(project.id, first.document.id)
    assert (document.version, document.status, document.title) == (2, "complete", "New")
    chunks = await rt.documents.chunks(project.id, first.document.id)
    assert len(chunks) > 1
    assert {chunk.context for chunk in chunks} == {"New"}


async def test_versions_submitted_at_once_leave_only_the_last_ones_bytes(
    store: BlobStore, runtime: Runtime, admin_principal: Principal
) -> None:
    documents = documents_over(runtime, store)
    project = await runtime.projects.create(admin_principal, "versions")
    await documents.submit(project.id, text("v.txt", b"version 0"))
    versions = [f"version {n}".encode() for n in range(1, 11)]
    await asyncio.gather(*(documents.submit(project.id, text("v.txt", v)) for v in versions))
    (document,) = await documents.list_page(project.id)
    last = next(v for v in versions if digest(v) == document.content_hash)
    assert [v for v in [b"version 0", *versions] if await kept(store, project.id, v)] == [last]


async def test_a_submission_holds_its_project_until_it_commits(
    store: BlobStore, runtime: Runtime, admin_principal: Principal, tmp_path: Path
) -> None:
    projects = Projects(runtime.db, runtime.projects.users, store)
    project = await projects.create(admin_principal, "held")
    gate = Gate(store)
    submitting = asyncio.create_task(
        documents_over(runtime, gate).submit(project.id, text("a.txt", b"bytes"))
    )
    await asyncio.wait_for(gate.kept.wait(), 10)
    deleting = asyncio.create_task(projects.delete(admin_principal, "held"))
    await waiting_on_a_lock(runtime, deleting)  # it waits for the submission, which then lands
    gate.go.set()
    submitted = await asyncio.wait_for(submitting, 10)
    assert submitted.outcome == "created"
    await asyncio.wait_for(deleting, 10)
    # The project went after it, with the document and its bytes.
    assert not await kept(store, project.id, b"bytes")
    with pytest.raises(ProjectNotFound):
        await documents_over(runtime, store).submit(project.id, text("b.txt", b"late"))
    assert not await kept(store, project.id, b"late")


async def test_the_sweep_deletes_kept_bytes_no_document_uses(
    store: BlobStore, runtime: Runtime, admin_principal: Principal, tmp_path: Path
) -> None:
    documents = documents_over(runtime, store)
    project = await runtime.projects.create(admin_principal, "sweep")
    await documents.submit_many(project.id, [text("a.txt", b"used"), text("b.txt", b"used too")])
    # What a submission cancelled between keeping its bytes and committing leaves behind.
    await store.put_many(project.id, {digest(b"left"): b"left", digest(b"also"): b"also"})
    # A project deleted by a process that died before its bytes went.
    gone = await runtime.projects.create(admin_principal, "gone")
    await documents.submit(gone.id, text("g.txt", b"orphan"))
    await runtime.db.execute("projects.delete", project_id=gone.id)
    stranger = uuid.uuid4()  # a project this database never had: another deployment's?
    partial = stale = None
    if isinstance(store, FileBlobStore):
        await store.put_many(stranger, {digest(b"theirs"): b"theirs"})
        # A put's temporary files: one a crash left two hours ago, one being written now.
        folder = tmp_path / "blobs" / str(project.id) / digest(b"used")[:2]
        stale, partial = folder / f".{digest(b'x')}.1.a", folder / f".{digest(b'y')}.1.b"
        stale.write_bytes(b"x")
        partial.write_bytes(b"y")
        two_hours_ago = time.time() - 7200
        os.utime(stale, (two_hours_ago, two_hours_ago))

    swept = await documents.sweep_all_blobs()

    assert swept["contents"] == 2
    assert swept["projects"] == 1
    assert swept["deleted_projects"] == 1
    assert swept["failed_projects"] == 0
    assert not await kept(store, gone.id, b"orphan")
    assert await kept(store, project.id, b"used")
    assert await kept(store, project.id, b"used too")
    assert not await kept(store, project.id, b"left")
    assert not await kept(store, project.id, b"also")
    if isinstance(store, FileBlobStore):
        assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == sorted(
            [str(project.id), str(stranger)]
        )
        assert stale is not None
        assert not stale.exists()
        assert partial is not None
        assert partial.exists()
    again = await documents.sweep_all_blobs()  # nothing left to sweep
    assert (again["contents"], again["deleted_projects"]) == (0, 0)


async def test_the_sweep_reads_every_batch(
    store: BlobStore,
    runtime: Runtime,
    admin_principal: Principal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blobs_module, "SCAN_BATCH", 2)
    documents = documents_over(runtime, store)
    project = await runtime.projects.create(admin_principal, "batches")
    used = [f"used {i}".encode() for i in range(5)]
    left = [f"left {i}".encode() for i in range(5)]
    await documents.submit_many(project.id, [text(f"{i}.txt", d) for i, d in enumerate(used)])
    await store.put_many(project.id, {digest(d): d for d in left})
    assert await documents.sweep_blobs(project.id) == 5
    assert [await kept(store, project.id, d) for d in used + left] == [True] * 5 + [False] * 5


async def test_the_sweep_waits_for_a_submission_in_flight(
    store: BlobStore, runtime: Runtime, admin_principal: Principal
) -> None:
    project = await runtime.projects.create(admin_principal, "in-flight")
    gate = Gate(store)
    # The bytes are kept, the document that uses them is not committed yet.
    submitting = asyncio.create_task(
        documents_over(runtime, gate).submit(project.id, text("a.txt", b"new"))
    )
    await asyncio.wait_for(gate.kept.wait(), 10)
    sweeping = asyncio.create_task(documents_over(runtime, store).sweep_blobs(project.id))
    if isinstance(store, FileBlobStore):
        await waiting_on_a_lock(runtime, sweeping)  # it sees the file; without the lock, gone
    # (The Postgres store's row is not visible to the sweep until the submission commits.)
    gate.go.set()
    _, swept = await asyncio.wait_for(asyncio.gather(submitting, sweeping), 10)
    assert swept == 0
    assert await kept(store, project.id, b"new")


async def test_a_worker_sweeps_when_its_schedule_says(
    settings: Settings, admin_principal: Principal
) -> None:
    every_second = settings.model_copy(
        update={"blob_sweep_cron": "* * * * * *", "blob_store": "file"}
    )
    async with open_runtime(every_second) as rt:
        project = await rt.projects.create(admin_principal, "scheduled")
        store = rt.documents.blobs
        await rt.documents.submit(project.id, text("a.txt", b"used"))
        await store.put_many(project.id, {digest(b"left"): b"left"})
        async with background_worker(rt, "sweeper", sweeps=True):
            for _ in range(200):
                if not await kept(store, project.id, b"left"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the worker did not sweep within 10 s")
        assert await kept(store, project.id, b"used")
