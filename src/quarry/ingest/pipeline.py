"""One document through parse -> split -> embed -> write.

The write is one transaction (``ChunkWriter``, which lets documents ready at the same moment
share one): the document's old chunks, vectors and lexical statistics go and the new ones
land together, or nothing changes. A worker killed at any point leaves the previous state
intact; the job runs again and finishes. Chunks whose text the project already has an
embedding for (same content hash, same model) reuse it, so a new version of a document only
pays for its new chunks.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import numpy as np
import structlog

from quarry.db.database import Database
from quarry.db.vector_index import VectorIndexes
from quarry.errors import EmptyDocument
from quarry.ingest.blobs import BlobMissing, BlobStore
from quarry.ingest.embedders import (
    Embedder,
    Vector,
    Vectors,
    embed_for_index,
    keeps_token_vectors,
)
from quarry.ingest.parsers import Format, Parsed, ParserRegistry, read
from quarry.ingest.split import Chunk, Splitter
from quarry.ingest.token_vectors import FORMAT as TOKEN_VECTORS_FORMAT
from quarry.ingest.token_vectors import is_current
from quarry.ingest.writer import ChunkWriter, DocumentWrite

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # indexed, unchanged, superseded, gone
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    pack_due: bool = False  # the project's postings are due to be packed (search.postings)


class Pipeline:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        registry: ParserRegistry,
        splitter: Splitter,
        embedder: Embedder,
        indexes: VectorIndexes,
        pack_after_chunks: int = 0,
    ) -> None:
        self.indexes = indexes
        self.db = db
        self.blobs = blobs
        self.registry = registry
        self.splitter = splitter
        self.embedder = embedder
        self.writer = ChunkWriter(db, embedder.model_id, pack_after_chunks=pack_after_chunks)

    async def index(self, project_id: uuid.UUID, document_id: uuid.UUID) -> Outcome:
        claimed = await self.db.fetch_one(
            "documents.claim", project_id=project_id, document_id=document_id
        )
        if claimed is None:
            exists = await self.db.fetch_one(
                "documents.get", project_id=project_id, document_id=document_id
            )
            return Outcome("unchanged" if exists else "gone")
        try:
            data = await self.blobs.get(project_id, claimed["content_hash"])
        except BlobMissing:
            # A new version submitted since the claim deletes the bytes it replaced; its own
            # job indexes it.
            now = await self.db.fetch_one(
                "documents.get", project_id=project_id, document_id=document_id
            )
            if now is None:
                return Outcome("gone")
            if now["content_hash"] != claimed["content_hash"]:
                return Outcome("superseded")
            raise
        fmt = self.registry.get(claimed["format"])
        parsed, chunks = await asyncio.to_thread(self._parse_and_split, fmt, data, claimed["title"])
        if not chunks:
            raise EmptyDocument("the document has no words to index, only punctuation or symbols")
        vectors, token_vectors, reused = await self._vectors(project_id, chunks)
        # Search needs the model's HNSW index. It is made before the model's first write
        # (outside any transaction: it is built concurrently), so that a document is
        # complete only once its vectors are searchable through the index.
        await self.indexes.ensure(self.embedder.model_id, self.embedder.dimensions)
        written = await self.writer.write(
            DocumentWrite(
                project_id,
                document_id,
                claimed["content_hash"],
                claimed["version"],
                text_length=len(parsed.text),
                title=parsed.title,
                chunks=chunks,
                vectors=vectors,
                token_vectors=token_vectors,
            )
        )
        if not written:
            return Outcome("superseded")
        pack_due = self.writer.take_pack_due(project_id)
        return Outcome("indexed", len(chunks), len(chunks) - reused, reused, pack_due)

    def _parse_and_split(self, fmt: Format, data: bytes, title: str) -> tuple[Parsed, list[Chunk]]:
        """The document's text and chunks; its title (given, else found by the parser) is
        the context of chunks that do not begin with it."""
        parsed = read(fmt, data)
        return parsed, self.splitter.split(parsed, title or parsed.title or "")

    async def _vectors(
        self, project_id: uuid.UUID, chunks: list[Chunk]
    ) -> tuple[Vectors, list[bytes | None], int]:
        """A vector per chunk, reused where the project has one for the same text and model;
        with token vectors where the embedder keeps them (a reused vector whose token vectors
        were not kept, or kept in an older form, is made again, so every chunk gets both)."""
        hashes = list({chunk.content_hash for chunk in chunks})
        rows = await self.db.fetch_all(
            "chunks.reusable_embeddings",
            project_id=project_id,
            model=self.embedder.model_id,
            hashes=hashes,
        )
        keep = keeps_token_vectors(self.embedder)
        known: dict[bytes, tuple[Vector, bytes | None]] = {
            bytes(row["content_hash"]): (
                row["embedding"].to_numpy().astype(np.float32),
                None if row["token_vectors"] is None else bytes(row["token_vectors"]),
            )
            for row in rows
            if not keep or is_current(row["token_vectors"])
        }
        todo = {c.content_hash: c.indexed_text for c in chunks if c.content_hash not in known}
        if todo:
            fresh = await embed_for_index(self.embedder, list(todo.values()))
            known.update(zip(todo, zip(fresh.vectors, fresh.stored(), strict=True), strict=True))
        reused = sum(1 for c in chunks if c.content_hash not in todo)
        vectors = np.stack([known[c.content_hash][0] for c in chunks])
        return vectors, [known[c.content_hash][1] for c in chunks], reused

    async def reembed(self, project_id: uuid.UUID, document_id: uuid.UUID) -> int:
        """Give a document's chunks vectors from the configured model (and token vectors,
        where it keeps them and a chunk has none in the current form), then drop the other
        models' vectors."""
        keep = keeps_token_vectors(self.embedder)
        rows = await self.db.fetch_all(
            "chunks.texts_missing_model",
            project_id=project_id,
            document_id=document_id,
            model=self.embedder.model_id,
            token_vectors=keep,
            token_format=bytes([TOKEN_VECTORS_FORMAT]),
        )
        texts = [row["text"] for row in rows]
        encoded = await embed_for_index(self.embedder, texts) if rows else None
        await self.indexes.ensure(self.embedder.model_id, self.embedder.dimensions)
        async with self.db.transaction() as conn:
            if rows and encoded is not None:
                await self.db.execute(
                    "chunks.insert_embeddings",
                    conn,
                    project_id=project_id,
                    model=self.embedder.model_id,
                    chunk_ids=[row["id"] for row in rows],
                    embeddings=list(encoded.vectors),
                    token_vectors=encoded.stored(),
                )
            await self.db.execute(
                "chunks.drop_other_models",
                conn,
                project_id=project_id,
                document_id=document_id,
                model=self.embedder.model_id,
            )
        return len(rows)
