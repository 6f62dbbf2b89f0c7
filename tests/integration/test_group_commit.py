"""Documents whose embeddings arrive together are written in one transaction, and a document
that cannot be written fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import numpy as np
import psycopg
import pytest

from quarry.ingest.documents import text_source
from quarry.ingest.embedders import Vectors
from quarry.runtime import Runtime, open_runtime
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.integration.test_ingest import invariant_violations

DOCUMENTS = 6
TEXTS = tuple(f"Document {n} is about topic {n} and nothing else." for n in range(DOCUMENTS))


class GatedEmbedder(HashEmbedder):
    """Holds every embed call until ``release`` is set, so that all documents reach the
    write at the same moment; texts containing "poison" get a vector Postgres refuses."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.waiting += 1
        await self.release.wait()
        vectors = await super().embed(texts)
        for row, text in enumerate(texts):
            if "poison" in text:
                vectors[row, 0] = np.nan  # pgvector: "NaN not allowed in vector"
        return vectors


async def _index_together(
    rt: Runtime, embedder: GatedEmbedder, project_id: uuid.UUID, texts: list[str]
) -> tuple[list[uuid.UUID], list[object]]:
    ids = []
    for n, text in enumerate(texts):
        source = text_source(
            text, external_id=f"doc-{n}", title="", fmt="txt", metadata={}, tags=()
        )
        ids.append((await rt.documents.submit(project_id, source)).document.id)
    assert rt.pipeline is not None
    pipeline = rt.pipeline
    # The model's vector index exists before, as it does after a project's first document:
    # building it would hold the documents back one by one.
    await pipeline.indexes.ensure(embedder.model_id, embedder.dimensions)
    runs = [asyncio.create_task(pipeline.index(project_id, d)) for d in ids]
    while embedder.waiting < len(texts):
        await asyncio.sleep(0.01)
    embedder.release.set()
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    return ids, outcomes


def _transactions(url: str, project_id: uuid.UUID) -> int:
    """How many transactions wrote the project's chunks (rows a transaction inserts share
    its id as xmin)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT xmin::text) FROM chunks WHERE project_id = %s", (project_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_documents_ready_together_share_one_transaction(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    embedder = GatedEmbedder()
    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        project = await rt.projects.create(admin_principal, "group-commit")
        texts = list(TEXTS)
        _, outcomes = await _index_together(rt, embedder, project.id, texts)

        assert [getattr(o, "status", o) for o in outcomes] == ["indexed"] * DOCUMENTS
        counts = await rt.documents.counts(project.id)
        assert counts.documents_by_status["complete"] == DOCUMENTS
        assert counts.chunk_count == DOCUMENTS
        assert rt.pipeline is not None
        assert rt.pipeline.writer.transactions == 1
    assert _transactions(fresh_database, project.id) == 1
    assert invariant_violations(fresh_database) == []


async def test_a_document_that_cannot_be_written_fails_alone(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    embedder = GatedEmbedder()
    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        project = await rt.projects.create(admin_principal, "group-commit-failure")
        texts = list(TEXTS)
        texts[2] = "This document carries poison for the vector column."
        ids, outcomes = await _index_together(rt, embedder, project.id, texts)

        assert isinstance(outcomes[2], psycopg.errors.DataException)
        assert "NaN" in str(outcomes[2])
        others = [o for n, o in enumerate(outcomes) if n != 2]
        assert [getattr(o, "status", o) for o in others] == ["indexed"] * (DOCUMENTS - 1)
        # The shared transaction failed; every document was then written on its own.
        assert rt.pipeline is not None
        assert rt.pipeline.writer.transactions == DOCUMENTS - 1
        poisoned = await rt.db.fetch_one("documents.get", project_id=project.id, document_id=ids[2])
        assert poisoned is not None
        assert poisoned["chunk_count"] == 0
        counts = await rt.documents.counts(project.id)
        assert counts.chunk_count == DOCUMENTS - 1
    assert _transactions(fresh_database, project.id) == DOCUMENTS - 1
    assert invariant_violations(fresh_database) == []


@pytest.mark.parametrize("shared", [1, DOCUMENTS])
async def test_the_batch_limit_bounds_a_transaction(
    ingest_settings: Settings, fresh_database: str, admin_principal, shared: int
) -> None:
    embedder = GatedEmbedder()
    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        assert rt.pipeline is not None
        rt.pipeline.writer.max_batch = shared
        project = await rt.projects.create(admin_principal, f"group-commit-{shared}")
        texts = list(TEXTS)
        await _index_together(rt, embedder, project.id, texts)
        assert rt.pipeline.writer.transactions == -(-DOCUMENTS // shared)
    assert _transactions(fresh_database, project.id) == -(-DOCUMENTS // shared)
