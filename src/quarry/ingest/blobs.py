"""Where a document's raw bytes are kept, so it can be re-processed without a re-upload.

Blobs are addressed by project and SHA-256 of their content: writing the same bytes twice
stores them once. ``FileBlobStore`` keeps them under the data directory (the embedded
default); ``PostgresBlobStore`` keeps them in the database, so workers on other machines can
read what an API replica received (the default with an external database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Protocol

from quarry.db.database import Conn, Database
from quarry.errors import TransientError


class BlobStore(Protocol):
    """``conn``: the transaction of the caller, which a store in the database writes in (so
    its writes commit or roll back with the caller's, on the connection the caller already
    holds); a store elsewhere ignores it."""

    async def put_many(
        self, project_id: uuid.UUID, blobs: Mapping[str, bytes], *, conn: Conn | None = None
    ) -> None:
        """Keep each content hash's bytes (once: a hash already kept is left as it is)."""
        ...

    async def get(self, project_id: uuid.UUID, content_hash: str) -> bytes: ...

    async def delete_many(
        self, project_id: uuid.UUID, content_hashes: Collection[str], *, conn: Conn | None = None
    ) -> None: ...

    async def delete_project(self, project_id: uuid.UUID) -> None:
        """Every blob of a project, once the project is deleted."""
        ...

    def scan(self, project_id: uuid.UUID) -> AsyncIterator[list[str]]:
        """The content hashes kept for a project, in batches (for ``Documents.sweep_blobs``)."""
        ...


# The sweep's batches, and the age from which a put's temporary file is one a crash left.
SCAN_BATCH = 1000
PARTIAL_AFTER_S = 3600.0


class BlobMissing(TransientError):
    """The bytes of a document are not (yet) readable: a shared disk may be catching up."""


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, project_id: uuid.UUID, content_hash: str) -> Path:
        if not _is_digest(content_hash):
            raise ValueError(f"not a SHA-256 hex digest: {content_hash!r}")
        return self.root / str(project_id) / content_hash[:2] / content_hash

    async def put_many(
        self, project_id: uuid.UUID, blobs: Mapping[str, bytes], *, conn: Conn | None = None
    ) -> None:
        """All in one trip to a worker thread: a batch of small files costs one hand-off."""
        files = [
            (self._path(project_id, content_hash), data) for content_hash, data in blobs.items()
        ]
        await asyncio.to_thread(self._put_all, files)

    @classmethod
    def _put_all(cls, files: list[tuple[Path, bytes]]) -> None:
        for path, data in files:
            cls._put(path, data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, project_id: uuid.UUID, content_hash: str) -> bytes:
        path = self._path(project_id, content_hash)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobMissing(f"raw bytes not found at {path}") from None

    async def delete_many(
        self, project_id: uuid.UUID, content_hashes: Collection[str], *, conn: Conn | None = None
    ) -> None:
        paths = [self._path(project_id, content_hash) for content_hash in content_hashes]
        await asyncio.to_thread(self._unlink_all, paths)

    @staticmethod
    def _unlink_all(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    async def delete_project(self, project_id: uuid.UUID) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / str(project_id), ignore_errors=True)

    async def scan(self, project_id: uuid.UUID) -> AsyncIterator[list[str]]:
        """A directory of the project's at a time (a 256th of its bytes, by the first two
        digits of their hash), in batches of about ``SCAN_BATCH``. A put's temporary file
        over ``PARTIAL_AFTER_S`` old, which a crash left between its write and its rename,
        is removed on the way."""
        prefixes = await asyncio.to_thread(_entries, self.root / str(project_id))
        batch: list[str] = []
        for prefix in sorted(prefixes, key=lambda entry: entry.name):
            batch.extend(await asyncio.to_thread(self._scan_prefix, Path(prefix.path)))
            if len(batch) >= SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    @staticmethod
    def _scan_prefix(prefix: Path) -> list[str]:
        stale = time.time() - PARTIAL_AFTER_S
        hashes = []
        for entry in _entries(prefix):
            if _is_digest(entry.name):
                hashes.append(entry.name)
            elif entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < stale:
                        os.unlink(entry.path)
        return hashes


def _is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """A directory's entries; none where there is no directory (nothing kept there yet, or a
    stray file where one would be)."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


class PostgresBlobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put_many(
        self, project_id: uuid.UUID, blobs: Mapping[str, bytes], *, conn: Conn | None = None
    ) -> None:
        params = [
            {"project_id": project_id, "content_hash": content_hash, "data": data}
            for content_hash, data in blobs.items()
        ]
        await self.db.execute_many("blobs.put", conn, params)

    async def get(self, project_id: uuid.UUID, content_hash: str) -> bytes:
        row = await self.db.fetch_one("blobs.get", project_id=project_id, content_hash=content_hash)
        if row is None:
            raise BlobMissing(f"raw bytes {content_hash} not in the database")
        return bytes(row["data"])

    async def delete_many(
        self, project_id: uuid.UUID, content_hashes: Collection[str], *, conn: Conn | None = None
    ) -> None:
        await self.db.execute(
            "blobs.delete", conn, project_id=project_id, content_hashes=list(content_hashes)
        )

    async def delete_project(self, project_id: uuid.UUID) -> None:
        """Nothing to do: the project's rows went with it (ON DELETE CASCADE)."""

    async def scan(self, project_id: uuid.UUID) -> AsyncIterator[list[str]]:
        after = ""
        while True:
            rows = await self.db.fetch_all(
                "blobs.scan", project_id=project_id, after=after, limit=SCAN_BATCH
            )
            if not rows:
                return
            yield [row["content_hash"] for row in rows]
            after = rows[-1]["content_hash"]
