"""The evaluation harness: a BEIR dataset into a fresh project, every query in each mode.

Documents are indexed by the normal path (submission, jobs, the pipeline), with the title
as the text's first line and as the document's title (so chunks after the first carry it as
context). Each query asks for 100 hits with at most one per document
(a document scores as its best chunk, as BEIR expects when chunks are smaller than
documents), so nDCG, recall and MRR are computed over documents.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from quarry.ingest.documents import Intake, text_source
from quarry.ingest.models import ProjectCounts
from quarry.runtime import Runtime
from quarry.search.evaluate import BeirDataset, summarize
from quarry.search.fusion import Method
from quarry.search.models import Mode, SearchRequest

DEPTH = 100


@dataclass
class LoadProgress:
    submitted: int = 0
    settled: int = 0
    failed: int = 0


def document_text(item: dict[str, Any]) -> str:
    title = str(item.get("title") or "").strip()
    text = str(item.get("text") or "")
    return f"{title}\n\n{text}" if title else text


async def load_corpus(
    rt: Runtime,
    project_id: uuid.UUID,
    dataset: BeirDataset,
    on_progress: Callable[[LoadProgress], None] = lambda _: None,
) -> LoadProgress:
    """Submit every document, then wait until each is complete or failed (a worker must be
    running)."""
    progress = LoadProgress()
    intake = Intake(rt.documents, project_id)
    for item in dataset.corpus():
        text = document_text(item)
        if not text.strip():
            continue
        source = text_source(
            text,
            external_id=str(item["_id"]),
            title=str(item.get("title") or ""),
            fmt="txt",
            metadata={},
            tags=(),
        )
        await intake.add(source.external_id, source)
        if intake.refused:  # a dataset is loaded whole or not at all
            raise intake.refused[0][1]
    await intake.finish()
    if intake.refused:
        raise intake.refused[0][1]
    progress.submitted = len(intake.accepted)

    def show(counts: ProjectCounts) -> None:
        by_status = counts.documents_by_status
        progress.settled = by_status["complete"] + by_status["failed"]
        progress.failed = by_status["failed"]
        on_progress(progress)

    await rt.documents.wait_settled(project_id, on_counts=show)
    return progress


@dataclass(frozen=True)
class Variant:
    name: str
    mode: Mode
    fusion: Method
    rerank: bool | None  # None: as the service decides (hybrid reranked when it has a reranker)


def variants(modes: Sequence[Mode], *, reranker: bool) -> list[Variant]:
    """What an evaluation runs: each mode as the service runs it by default (hybrid with its
    rerank stage where a reranker is configured); with hybrid, also plain reciprocal rank
    fusion (``hybrid_rrf``), the reference the default fusion must beat, and where a reranker
    is configured, the fusion without it (``hybrid_fused``), the stage's reference."""
    runs = [Variant(mode.value, mode, Method.adaptive, None) for mode in modes]
    if Mode.hybrid in modes:
        if reranker:
            runs.append(Variant("hybrid_fused", Mode.hybrid, Method.adaptive, False))
        runs.append(Variant("hybrid_rrf", Mode.hybrid, Method.rrf, False))
    return runs


async def evaluate(
    rt: Runtime,
    project_id: uuid.UUID,
    dataset: BeirDataset,
    modes: Sequence[Mode],
    *,
    candidates: int | None = None,
    on_query: Callable[[str, int], None] = lambda _m, _i: None,
) -> dict[str, dict[str, float]]:
    """Run every query of the split in each of ``variants``; metrics per variant.
    ``candidates`` is each retriever's depth in chunks (default: the service's setting)."""
    figures: dict[str, dict[str, float]] = {}
    for variant in variants(modes, reranker=rt.search.reranker is not None):
        runs: dict[str, list[str]] = {}
        latencies: list[float] = []
        for i, (query_id, text) in enumerate(dataset.queries.items()):
            request = SearchRequest(
                query=text,
                mode=variant.mode,
                fusion=variant.fusion,
                k=DEPTH,
                candidates=candidates,
                per_document=True,
                rerank=variant.rerank,
            )
            started = time.perf_counter()
            response = await rt.search.search(project_id, request)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = [hit.external_id for hit in response.hits]
            if len(set(ranked)) != len(ranked):
                raise RuntimeError(f"per-document search repeated a document for {query_id}")
            # As BEIR's evaluation does by default (ignore_identical_ids): a document with the
            # query's own id is the query itself (ArguAna, Quora), not an answer to it.
            runs[query_id] = [doc for doc in ranked if doc != query_id]
            on_query(variant.name, i + 1)
        figures[variant.name] = summarize(runs, dataset.qrels, latencies)
    return figures
