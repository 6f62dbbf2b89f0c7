"""The transactional write of documents' chunks, with group commit.

A document's new chunks, their vectors and postings, and the project's lexical totals replace
its old ones in one transaction, or nothing changes. Writes that become ready while another
transaction is in flight wait and then share the next one: the embedder encodes chunks of
many documents in one call, so their writes arrive together, and one transaction for all of
them saves a lock, a delete, an insert, an update, a commit and their round trips per
document, and the turns each commit takes on the project's ``lexical_stats`` row. An idle
writer starts at once, so a lone document waits for nothing.

Each document still succeeds or fails on its own: when a shared transaction fails, its
documents are written again one per transaction, so an error stays with the document that
caused it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import structlog

from quarry.db.database import Database
from quarry.ingest.embedders import Vectors
from quarry.ingest.split import Chunk

log = structlog.get_logger(__name__)

MAX_DOCUMENTS_PER_TRANSACTION = 64


@dataclass(frozen=True)
class DocumentWrite:
    """A document's new state: what replaces its chunks if it is still ``version`` when the
    write takes its lock (a version with the same content but a new title or format is a
    new version all the same: its chunks are made from them)."""

    project_id: uuid.UUID
    document_id: uuid.UUID
    content_hash: str  # the SHA-256 hex digest of the raw bytes, as documents store it
    version: int
    text_length: int
    title: str | None  # found by the parser; kept only where the document has none
    chunks: list[Chunk]
    vectors: Vectors  # one row per chunk
    # One per chunk: its token vectors in their stored form (quarry.ingest.token_vectors), or
    # None where not kept.
    token_vectors: list[bytes | None]


@dataclass
class _Pending:
    write: DocumentWrite
    future: asyncio.Future[bool]


class ChunkWriter:
    def __init__(
        self,
        db: Database,
        model_id: str,
        max_batch: int = MAX_DOCUMENTS_PER_TRANSACTION,
        pack_after_chunks: int = 0,
    ) -> None:
        self.db = db
        self.model_id = model_id
        self.max_batch = max_batch
        # Projects that have had this many chunks written since their postings were last
        # packed (0: never), until a caller takes the news (take_pack_due).
        self.pack_after_chunks = pack_after_chunks
        self._pack_due: set[uuid.UUID] = set()
        self.transactions = 0  # committed, for tests and benchmarks
        self._pending: list[_Pending] = []
        self._runner: asyncio.Task[None] | None = None

    async def write(self, write: DocumentWrite) -> bool:
        """Replace the document's chunks; False if its content changed (or it was deleted)
        since it was claimed, in which case nothing is written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(write, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="chunk-writer")
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                await self._commit(batch)
            except BaseException:
                # Cancelled with the process: nobody is left to answer; the jobs run again.
                for pending in batch:
                    if not pending.future.done():
                        pending.future.cancel()
                raise

    def take_pack_due(self, project_id: uuid.UUID) -> bool:
        """Whether the project's postings became due to be packed since this was last asked
        (True once: the caller queues the pack)."""
        if project_id not in self._pack_due:
            return False
        self._pack_due.discard(project_id)
        return True

    def _take(self) -> list[_Pending]:
        """The next batch: the oldest write's project, each document at most once, in the
        order they arrived."""
        project = self._pending[0].write.project_id
        batch: list[_Pending] = []
        documents: set[uuid.UUID] = set()
        for pending in self._pending:
            write = pending.write
            if write.project_id == project and write.document_id not in documents:
                batch.append(pending)
                documents.add(write.document_id)
                if len(batch) == self.max_batch:
                    break
        taken = {id(pending) for pending in batch}
        self._pending = [pending for pending in self._pending if id(pending) not in taken]
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            written = await self._write_many([pending.write for pending in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
                return
            log.warning(
                "shared write failed; writing its documents one by one",
                documents=len(batch),
                error=str(exc) or type(exc).__name__,
            )
            for pending in batch:
                await self._commit([pending])
            return
        for pending, done in zip(batch, written, strict=True):
            _settle(pending.future, done)

    async def _write_many(self, writes: list[DocumentWrite]) -> list[bool]:
        """One transaction, four statements whatever the number of documents: lock them, drop
        the old chunks of those that have some, insert every new chunk with its vector and
        postings, then mark the documents complete and move the project's lexical totals by
        the difference."""
        project_id = writes[0].project_id
        async with self.db.transaction() as conn:
            rows = await self.db.fetch_all(
                "documents.lock_for_write",
                conn,
                project_id=project_id,
                document_ids=[w.document_id for w in writes],
            )
            locked = {row["id"]: row for row in rows}
            current = [
                w
                for w in writes
                if w.document_id in locked
                and locked[w.document_id]["version"] == w.version
                and locked[w.document_id]["content_hash"] == w.content_hash
            ]
            if not current:
                return [False] * len(writes)
            replaced = [w.document_id for w in current if locked[w.document_id]["chunk_count"]]
            if replaced:
                await self.db.execute(
                    "chunks.delete_for_documents",
                    conn,
                    project_id=project_id,
                    document_ids=replaced,
                )
            chunks = [(w.document_id, c) for w in current for c in w.chunks]
            counts = {
                row["document_id"]: row
                for row in await self.db.fetch_all(
                    "chunks.insert_many",
                    conn,
                    project_id=project_id,
                    model=self.model_id,
                    document_id=[d for d, _ in chunks],
                    chunk_index=[c.index for _, c in chunks],
                    text=[c.text for _, c in chunks],
                    context=[c.context for _, c in chunks],
                    char_start=[c.char_start for _, c in chunks],
                    char_end=[c.char_end for _, c in chunks],
                    page=[c.page for _, c in chunks],
                    token_count=[c.token_count for _, c in chunks],
                    content_hash=[c.content_hash for _, c in chunks],
                    embeddings=[v for w in current for v in w.vectors],
                    token_vectors=[t for w in current for t in w.token_vectors],
                )
            }
            made = [counts.get(w.document_id, {"chunks": 0, "terms": 0}) for w in current]
            assert [row["chunks"] for row in made] == [len(w.chunks) for w in current]
            terms = [int(row["terms"]) for row in made]
            completed = await self.db.fetch_all(
                "documents.complete",
                conn,
                project_id=project_id,
                document_ids=[w.document_id for w in current],
                chunk_counts=[len(w.chunks) for w in current],
                term_counts=terms,
                text_lengths=[w.text_length for w in current],
                titles=[w.title for w in current],
                chunk_delta=sum(
                    len(w.chunks) - locked[w.document_id]["chunk_count"] for w in current
                ),
                term_delta=sum(
                    t - locked[w.document_id]["term_count"]
                    for w, t in zip(current, terms, strict=True)
                ),
                chunks_written=len(chunks),
            )
        self.transactions += 1
        since_pack = int(completed[0]["chunks_since_pack"]) if completed else 0
        if 0 < self.pack_after_chunks <= since_pack:
            self._pack_due.add(project_id)
        written = {w.document_id for w in current}
        return [w.document_id in written for w in writes]


def _settle(future: asyncio.Future[bool], outcome: bool | Exception) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
