"""Documents as a service: submit (idempotent, versioned), read, delete, retry, reindex."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

import structlog
from psycopg.types.json import Jsonb

from quarry.db.database import Conn, Database
from quarry.errors import (
    DocumentError,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    InvalidInput,
    ProjectNotFound,
)
from quarry.ingest.blobs import BlobStore
from quarry.ingest.models import (
    ChunkView,
    Document,
    Outcome,
    ProjectCounts,
    Status,
    Submission,
)
from quarry.ingest.parsers import ParserRegistry
from quarry.ingest.source import Source
from quarry.ingest.token_vectors import FORMAT as TOKEN_VECTORS_FORMAT
from quarry.validation import unstorable

log = structlog.get_logger(__name__)

PAGE_LIMIT = 1000
# A submission's outcomes that queue the document's indexing (a new row, or a new version);
# the others are "metadata_updated" (metadata, tags or source changed in place) and
# "unchanged".
INDEXED_OUTCOMES = frozenset({"created", "updated"})
MAX_EXTERNAL_ID_BYTES = 2048
MAX_TAGS = 100
MAX_TAG_CHARS = 256
# Why one source of a batch was refused (``Documents.check``): the rest of the batch goes on.
Refusal = DocumentError | InvalidInput
# An Intake passes its sources to submit_many in batches this large: enough to share its
# round trips, few enough bytes to hold.
SUBMIT_BATCH = 256
SUBMIT_BATCH_BYTES = 64 * 1024 * 1024


# Re-embeds that only refill token vectors wait for every other job (procrastinate's default
# priority is 0; higher runs first).
REFILL_PRIORITY = -10


class IngestQueue(Protocol):
    async def enqueue_ingest(self, project_id: uuid.UUID, document_id: uuid.UUID) -> None: ...

    async def enqueue_ingest_many(
        self, project_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
    ) -> None: ...

    async def enqueue_reembed(
        self, project_id: uuid.UUID, document_id: uuid.UUID, *, priority: int = 0
    ) -> None: ...


@dataclass(frozen=True)
class Checked:
    """A source that passed ``Documents.check``, with its format's name."""

    source: Source
    format: str

    @cached_property
    def content_hash(self) -> str:
        return hashlib.sha256(self.source.data).hexdigest()

    def upsert_params(self, project_id: uuid.UUID) -> dict[str, Any]:
        s = self.source
        return {
            "project_id": project_id,
            "external_id": s.external_id,
            "source_kind": s.kind,
            "source": s.name,
            "title": s.title,
            "format": self.format,
            "content_hash": self.content_hash,
            "size_bytes": len(s.data),
            "metadata": Jsonb(s.metadata),
            "tags": list(s.tags),
        }


class Documents:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        registry: ParserRegistry,
        queue: IngestQueue,
        *,
        max_bytes: int,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.registry = registry
        self.queue = queue
        self.max_bytes = max_bytes

    def check_size(self, name: str, size: int) -> None:
        if size > self.max_bytes:
            raise DocumentTooLarge(
                f"{name} is {size} bytes; the limit is {self.max_bytes} (QUARRY_MAX_UPLOAD_BYTES)"
            )

    def check(self, source: Source) -> str:
        """Refuse what can be refused before storing anything; return the format's name."""
        self.check_size(source.name, len(source.data))
        if not source.data:
            raise EmptyDocument(f"{source.name} is empty")
        _check_storable(
            ("name", source.name), ("external_id", source.external_id), ("title", source.title)
        )
        _check_description(source.metadata, source.tags)
        # An index key, which Postgres bounds in bytes (about 2,700 per entry).
        if len(source.external_id.encode()) > MAX_EXTERNAL_ID_BYTES:
            raise InvalidInput(
                f"external_id is longer than {MAX_EXTERNAL_ID_BYTES} bytes in UTF-8",
                field="external_id",
            )
        if source.format is not None:
            return self.registry.get(source.format).name
        return self.registry.detect(source.name, source.media_type).name

    async def submit(self, project_id: uuid.UUID, source: Source) -> Submission:
        """Store the bytes, create or version the document, queue its job.

        Identical content under the same external id writes nothing and queues nothing;
        identical content with new metadata, tags or source name updates those in place and
        queues nothing (``metadata_updated``).
        """
        (result,) = await self.submit_many(project_id, [source])
        if isinstance(result, Submission):
            return result
        raise result

    async def submit_many(
        self, project_id: uuid.UUID, sources: Sequence[Source]
    ) -> list[Submission | Refusal]:
        """``submit`` for each source, in order, each with the outcome it would have alone: a
        source refused by ``check`` gets its error in its place and the rest go on, and one
        external id given twice is created, then versioned, described anew or found
        unchanged, in that order (an unchanged source is reported with its document as the
        whole batch left it).

        The work is shared: one hand-off for the bytes, the upserts sent together in one
        transaction, one statement queueing the jobs. A batch of small documents costs a few
        round trips instead of a few per document (bulk uploads, `quarry ingest`, the BEIR
        loader). The upserts are all or nothing, so a failed write leaves none of the batch
        behind; a crash after them leaves documents without a job, which the worker's
        recovery queues (``Jobs.recover``)."""
        refused: dict[int, Refusal] = {}
        checked: list[Checked] = []
        for position, source in enumerate(sources):
            try:
                checked.append(Checked(source, self.check(source)))
            except (DocumentError, InvalidInput) as exc:
                refused[position] = exc
        written = iter(await self._write(project_id, checked) if checked else [])
        return [refused[i] if i in refused else next(written) for i in range(len(sources))]

    async def _write(self, project_id: uuid.UUID, checked: list[Checked]) -> list[Submission]:
        # Upserts go in order of external id (a stable sort: one id given twice keeps its
        # order), as every submission's do, so two batches never wait on each other's
        # inserts in opposite orders.
        order = sorted(range(len(checked)), key=lambda i: checked[i].source.external_id)
        kept = False
        try:
            async with self.db.transaction() as conn:
                held = await self.db.fetch_one(
                    "documents.hold_project", conn, project_id=project_id
                )
                if held is None:
                    raise ProjectNotFound("the project was deleted")
                before = await self.db.fetch_all(
                    "documents.lock_by_external_ids",
                    conn,
                    project_id=project_id,
                    external_ids=sorted({c.source.external_id for c in checked}),
                )
                kept = True
                await self.blobs.put_many(
                    project_id, {c.content_hash: c.source.data for c in checked}, conn=conn
                )
                sent = await self.db.fetch_each(
                    "documents.upsert", conn, [checked[i].upsert_params(project_id) for i in order]
                )
                rows: list[dict[str, Any] | None] = [None] * len(checked)
                for i, row in zip(order, sent, strict=True):
                    rows[i] = row
                # Identical content returned no row: such a document is as it was (or as an
                # earlier source of this batch made it).
                unchanged = [
                    c.source.external_id for c, row in zip(checked, rows, strict=True) if not row
                ]
                current = await self._by_external_id(conn, project_id, unchanged)
        except Exception:
            if kept:  # bytes kept outside the database stay unless taken back
                try:
                    await self._forget(project_id, {c.content_hash for c in checked})
                except Exception:
                    log.warning("the bytes of a failed submission stay behind", exc_info=True)
            raise
        submissions = []
        for c, row in zip(checked, rows, strict=True):
            if row is None:
                submissions.append(
                    Submission(document=current[c.source.external_id], outcome="unchanged")
                )
            else:
                inserted, previous = row.pop("inserted"), row.pop("previous_version")
                outcome: Outcome
                if previous is None:
                    # Created by a submission that committed while this one waited on it,
                    # which this statement cannot see: at its first version.
                    previous = 1
                if inserted:
                    outcome = "created"
                elif previous == row["version"]:
                    outcome = "metadata_updated"  # described anew; its index stands
                else:
                    outcome = "updated"
                submissions.append(Submission(document=Document(**row), outcome=outcome))
        await self.queue.enqueue_ingest_many(
            project_id, [s.document.id for s in submissions if s.outcome in INDEXED_OUTCOMES]
        )
        # The contents this batch replaced, its own earlier versions of an external id given
        # twice included, may be used by no document now. The documents are stored and
        # queued whatever happens here: bytes left behind are only disk.
        last = {c.source.external_id: c.content_hash for c in checked}
        replaced = {row["content_hash"] for row in before} | {c.content_hash for c in checked}
        try:
            await self._forget(project_id, replaced - set(last.values()))
        except Exception:
            log.warning("the bytes a submission replaced stay behind", exc_info=True)
        return submissions

    async def _by_external_id(
        self, conn: Conn, project_id: uuid.UUID, external_ids: list[str]
    ) -> dict[str, Document]:
        if not external_ids:
            return {}
        rows = await self.db.fetch_all(
            "documents.get_by_external_ids", conn, project_id=project_id, external_ids=external_ids
        )
        return {row["external_id"]: Document(**row) for row in rows}

    async def get(self, project_id: uuid.UUID, document_id: uuid.UUID) -> Document:
        row = await self.db.fetch_one(
            "documents.get", project_id=project_id, document_id=document_id
        )
        if row is None:
            raise DocumentNotFound(f"no document {document_id} in this project")
        return Document(**row)

    async def list_page(
        self,
        project_id: uuid.UUID,
        *,
        status: Status | None = None,
        limit: int = 100,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Document]:
        rows = await self.db.fetch_all(
            "documents.list",
            project_id=project_id,
            status=status.value if status else None,
            limit=max(1, min(limit, PAGE_LIMIT)),
            before_created=before[0] if before else None,
            before_id=before[1] if before else None,
        )
        return [Document(**row) for row in rows]

    async def list_all(
        self, project_id: uuid.UUID, *, status: Status | None = None
    ) -> list[Document]:
        """Every document (of ``status``), newest first, read a page at a time."""
        documents: list[Document] = []
        before = None
        while True:
            page = await self.list_page(project_id, status=status, limit=PAGE_LIMIT, before=before)
            documents += page
            if len(page) < PAGE_LIMIT:
                return documents
            before = (page[-1].created_at, page[-1].id)

    async def chunks(self, project_id: uuid.UUID, document_id: uuid.UUID) -> list[ChunkView]:
        await self.get(project_id, document_id)
        rows = await self.db.fetch_all(
            "chunks.list_for_document", project_id=project_id, document_id=document_id
        )
        return [ChunkView(**row) for row in rows]

    async def counts(self, project_id: uuid.UUID) -> ProjectCounts:
        rows = await self.db.fetch_all("documents.counts", project_id=project_id)
        by_status = {status.value: 0 for status in Status}
        by_status.update({row["status"]: row["n"] for row in rows})
        return ProjectCounts(
            document_count=sum(by_status.values()),
            chunk_count=sum(int(row["chunks"]) for row in rows),
            documents_by_status=by_status,
        )

    async def wait_settled(
        self,
        project_id: uuid.UUID,
        *,
        poll: float = 0.5,
        on_counts: Callable[[ProjectCounts], None] = lambda _: None,
    ) -> ProjectCounts:
        """Wait until no document of the project is pending or indexing (a worker must be
        running somewhere); ``on_counts`` sees the counts at every poll."""
        while True:
            counts = await self.counts(project_id)
            on_counts(counts)
            by_status = counts.documents_by_status
            if by_status["pending"] == 0 and by_status["indexing"] == 0:
                return counts
            await asyncio.sleep(poll)

    async def describe(
        self,
        project_id: uuid.UUID,
        document_id: uuid.UUID,
        *,
        metadata: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Document:
        """Replace a document's metadata or tags (whichever is given) in place: what
        describes it, not what is indexed, so there is no new version and no job, and
        searches filter on the new values at once."""
        _check_description(metadata or {}, tags or ())
        row = await self.db.fetch_one(
            "documents.describe",
            project_id=project_id,
            document_id=document_id,
            metadata=None if metadata is None else Jsonb(metadata),
            tags=None if tags is None else list(tags),
        )
        if row is None:
            raise DocumentNotFound(f"no document {document_id} in this project")
        return Document(**row)

    async def delete(self, project_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Remove a document, its chunks, vectors and statistics in one transaction."""
        async with self.db.transaction() as conn:
            locked = await self.db.fetch_one(
                "documents.lock", conn, project_id=project_id, document_id=document_id
            )
            if locked is None:
                raise DocumentNotFound(f"no document {document_id} in this project")
            await self.db.execute(
                "documents.delete", conn, project_id=project_id, document_id=document_id
            )
            await self.db.execute(
                "chunks.add_stats",
                conn,
                project_id=project_id,
                chunks=-locked["chunk_count"],
                terms=-locked["term_count"],
            )
        await self._forget(project_id, {locked["content_hash"]})

    async def _forget(self, project_id: uuid.UUID, content_hashes: Iterable[str | None]) -> int:
        """Delete the kept bytes of each content no document of the project uses.

        A submission holds the project's kept bytes shared from before it stores its own
        until its documents are committed (``documents.hold_project``); this holds them
        exclusively, so it sees those documents, or deletes before the bytes are stored again.
        Without the lock, a document submitted with the content of one being deleted could
        find its bytes already kept, and then gone. Called after the transaction that stopped
        using the contents: it holds no row lock while it waits for a submission.

        What it is given is all it checks: a content whose last document was versioned by a
        submission that did not see it (the same new external id created by two submissions
        at once) is not among them, and its bytes stay until ``sweep_blobs``. Returns how many
        contents it deleted."""
        contents = {h for h in content_hashes if h is not None}
        if not contents:
            return 0
        async with self.db.transaction() as conn:
            await self.db.execute("documents.lock_contents", conn, project_id=project_id)
            rows = await self.db.fetch_all(
                "documents.contents_in_use",
                conn,
                project_id=project_id,
                content_hashes=sorted(contents),
            )
            unused = contents - {row["content_hash"] for row in rows}
            if unused:
                await self.blobs.delete_many(project_id, sorted(unused), conn=conn)
        return len(unused)

    async def sweep_blobs(self, project_id: uuid.UUID) -> int:
        """Delete every kept content no document of the project uses, and return how many.

        Submissions and deletions forget what they stop using; what they cannot see is left
        for this: the bytes of a submission cancelled or killed before it committed (a file
        store keeps them outside the transaction), and those of one of two submissions that
        created the same external id at once (``_forget``). A batch at a time, each under the
        forget's lock, so a submission in flight is waited for, and its bytes are in use by
        the time they are checked."""
        swept = 0
        async for batch in self.blobs.scan(project_id):
            swept += await self._forget(project_id, batch)
        return swept

    async def sweep_all_blobs(self) -> dict[str, int]:
        """``sweep_blobs`` for every project, and the bytes of deleted projects that a crash
        left behind (``projects.delete`` records each until its bytes are gone). A project
        that fails is logged and the sweep goes on with the others."""
        deleted = [row["id"] for row in await self.db.fetch_all("projects.deleted")]
        for project_id in deleted:
            await self.blobs.delete_project(project_id)
            await self.db.execute("projects.forget_deleted", project_id=project_id)
        swept = failed = 0
        projects = [row["id"] for row in await self.db.fetch_all("projects.ids")]
        for project_id in projects:
            try:
                swept += await self.sweep_blobs(project_id)
            except Exception:
                failed += 1
                log.exception("sweeping a project's kept bytes failed", project_id=str(project_id))
        return {
            "projects": len(projects),
            "contents": swept,
            "deleted_projects": len(deleted),
            "failed_projects": failed,
        }

    async def retry(self, project_id: uuid.UUID, document_ids: list[uuid.UUID] | None) -> int:
        """Queue failed documents again (all of them when ``document_ids`` is None)."""
        if document_ids is None:
            rows = await self.db.fetch_all(
                "documents.ids_by_status", project_id=project_id, status="failed"
            )
            document_ids = [row["id"] for row in rows]
        retried = 0
        for document_id in document_ids:
            reset = await self.db.fetch_one(
                "documents.reset_for_retry", project_id=project_id, document_id=document_id
            )
            if reset is None:
                await self.get(project_id, document_id)  # 404 when it does not exist
                continue
            await self.queue.enqueue_ingest(project_id, document_id)
            retried += 1
        return retried

    async def reindex(self, project_id: uuid.UUID) -> int:
        """Re-embed every document with the configured model; the old vectors go as each
        document's new ones land, and search only ever reads one model's vectors."""
        rows = await self.db.fetch_all("documents.all_ids", project_id=project_id)
        for row in rows:
            await self.queue.enqueue_reembed(project_id, row["id"])
        return len(rows)

    async def refill_token_vectors(self, model: str) -> int:
        """Queue a re-embed of every document, in any project, with a chunk whose vector from
        ``model`` has no token vectors in the current form (indexed by a version, or a worker,
        that did not keep them; or kept in an older form): late interaction would encode such
        chunks at every search until then. Behind other work (a lower priority), so that an
        upgrade's refill does not hold up new documents. Vectors of other models are left to
        ``reindex``: changing model is a choice, and a costly one with a paid provider."""
        rows = await self.db.fetch_all(
            "documents.stale_token_vectors",
            model=model,
            token_format=bytes([TOKEN_VECTORS_FORMAT]),
        )
        for row in rows:
            await self.queue.enqueue_reembed(
                row["project_id"], row["document_id"], priority=REFILL_PRIORITY
            )
        return len(rows)


def _check_storable(*fields: tuple[str, object]) -> None:
    for field, value in fields:
        found = unstorable(value, field)
        if found:
            raise InvalidInput(f"{found[0]}: {found[1]}", field=found[0])


def _check_description(metadata: dict[str, Any], tags: Sequence[str]) -> None:
    """What a document's metadata and tags must be, however they are given."""
    _check_storable(("metadata", metadata), ("tags", list(tags)))
    # Tags are index keys too (a GIN index over them).
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"more than {MAX_TAGS} tags", field="tags")
    for position, tag in enumerate(tags):
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(
                f"a tag is longer than {MAX_TAG_CHARS} characters", field=f"tags.{position}"
            )


def text_source(
    text: str,
    *,
    external_id: str | None,
    title: str,
    fmt: str,
    metadata: dict[str, Any],
    tags: tuple[str, ...],
) -> Source:
    data = text.encode()
    name = title or (external_id or "text")
    return Source(
        data=data,
        name=name,
        external_id=external_id or f"text:{hashlib.sha256(data).hexdigest()}",
        kind="text",
        format=fmt,
        title=title,
        metadata=metadata,
        tags=tags,
    )


class Intake:
    """The sources of one bulk caller (a request with many files or texts, `quarry ingest`,
    the BEIR loader), gathered under names of the caller's choosing and submitted in batches
    of ``SUBMIT_BATCH`` sources or ``SUBMIT_BATCH_BYTES`` bytes; each accepted or refused on
    its own. Call ``finish`` to submit what is still waiting."""

    def __init__(self, documents: Documents, project_id: uuid.UUID) -> None:
        self.documents = documents
        self.project_id = project_id
        self.accepted: list[tuple[str, Submission]] = []
        self.refused: list[tuple[str, Refusal]] = []
        self._pending: list[tuple[str, Source]] = []
        self._pending_bytes = 0

    def refuse(self, name: str, exc: Refusal) -> None:
        """Record a source the caller refused before it was read (too large, say)."""
        self.refused.append((name, exc))

    async def add(self, name: str, source: Source) -> None:
        self._pending.append((name, source))
        self._pending_bytes += len(source.data)
        if len(self._pending) >= SUBMIT_BATCH or self._pending_bytes >= SUBMIT_BATCH_BYTES:
            await self.finish()

    async def finish(self) -> None:
        if not self._pending:
            return
        sources = [source for _, source in self._pending]
        results = await self.documents.submit_many(self.project_id, sources)
        for (name, _), result in zip(self._pending, results, strict=True):
            if isinstance(result, Submission):
                self.accepted.append((name, result))
            else:
                self.refused.append((name, result))
        self._pending.clear()
        self._pending_bytes = 0
