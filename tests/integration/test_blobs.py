"""Both blob stores keep a batch of documents' bytes, once each, until deleted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from quarry.ingest.blobs import BlobMissing, BlobStore, FileBlobStore, PostgresBlobStore
from quarry.runtime import Runtime
from quarry.tenancy.models import Principal


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
    await store.delete(project.id, gone)
    with pytest.raises(BlobMissing):
        await store.get(project.id, gone)
    await store.put_many(project.id, {})  # an empty batch is no work
