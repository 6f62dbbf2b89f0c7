"""Task definitions. Tasks reach the process's services through the job context.

Tasks are plain functions registered on each App by ``register``: a module-level Blueprint
would be global state shared by every App in the process. Every task takes ``project_id``:
jobs are scoped by project like everything else; the one exception is the periodic sweep of
kept bytes, which goes over every project.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import procrastinate
import structlog
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from psycopg.types.json import Jsonb

from quarry.answers.chat import summarise
from quarry.answers.summaries import summarise_document as write_document_summary
from quarry.db.database import Database
from quarry.errors import DocumentError, QuarryError
from quarry.gateway.gateway import Gateway
from quarry.ingest.documents import Documents
from quarry.ingest.pipeline import Pipeline
from quarry.search.postings import MIN_POSTINGS, pack

log = structlog.get_logger(__name__)
CONTEXT_KEY = "quarry"
ECHO = "quarry:echo"
INGEST = "quarry:ingest_document"
REEMBED = "quarry:reembed_document"
SUMMARISE_CONVERSATION = "quarry:summarise_conversation"
SUMMARISE_DOCUMENT = "quarry:summarise_document"
PACK_POSTINGS = "quarry:pack_postings"
PACK_LOCK_PREFIX = f"{PACK_POSTINGS}:"  # then the project's id: a pack's queueing lock
SWEEP_BLOBS = "quarry:sweep_blobs"
DEFAULT_QUEUE = "default"
MAINTENANCE_QUEUE = "maintenance"
INGEST_QUEUE = "ingest"
SWEEP_QUEUE = "sweep"  # only long-lived workers take it (Runtime.run_worker's sweeps)
QUEUES = (DEFAULT_QUEUE, INGEST_QUEUE, MAINTENANCE_QUEUE, SWEEP_QUEUE)


@dataclass(frozen=True)
class TaskDeps:
    db: Database
    pipeline: Pipeline | None
    gateway: Gateway | None = None
    document_summaries: bool = False  # queue a summary of each document once indexed
    pack_min_postings: int = MIN_POSTINGS  # a term's postings packed from this many
    documents: Documents | None = None  # for the sweep of kept bytes


def deps_of(context: procrastinate.JobContext) -> TaskDeps:
    deps = context.additional_context[CONTEXT_KEY]
    assert isinstance(deps, TaskDeps)
    return deps


def pipeline_of(context: procrastinate.JobContext) -> Pipeline:
    pipeline = deps_of(context).pipeline
    if pipeline is None:
        raise RuntimeError("this worker was started without an embedder")
    return pipeline


class BackoffRetry(BaseRetryStrategy):
    """Exponential backoff with full jitter; documents that cannot be read are not retried."""

    def __init__(self, max_attempts: int, base_seconds: float, cap_seconds: float = 600) -> None:
        self.max_attempts = max_attempts
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds

    def gives_up(self, exception: BaseException, job: Job) -> bool:
        """True when this failure ends the job: the document is refused for good, or this
        was its last attempt (``job.attempts`` counts the runs before this one)."""
        return isinstance(exception, DocumentError) or job.attempts + 1 >= self.max_attempts

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if self.gives_up(exception, job):
            return None
        ceiling = min(self.cap_seconds, self.base_seconds * 2**job.attempts)
        wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=wait))


async def defer_pack(app: procrastinate.App, project_id: str) -> bool:
    """Queue a pack of the project's postings, unless one is queued already (one at a time
    per project; it packs whatever is there when it runs). Whether this queued it."""
    packer = app.configure_task(PACK_POSTINGS, queueing_lock=f"{PACK_LOCK_PREFIX}{project_id}")
    try:
        await packer.defer_async(project_id=project_id)
    except AlreadyEnqueued:
        return False
    return True


async def echo(context: procrastinate.JobContext, project_id: str, message: str) -> None:
    """The smallest job that proves the loop: it stores what it was given as its result."""
    assert context.job.id is not None
    result: dict[str, Any] = {"echo": message, "worker": context.worker_name}
    await deps_of(context).db.execute(
        "jobs.save_result", job_id=context.job.id, project_id=project_id, result=Jsonb(result)
    )


async def ingest_document(
    context: procrastinate.JobContext, project_id: str, document_id: str
) -> None:
    deps = deps_of(context)
    project, document = uuid.UUID(project_id), uuid.UUID(document_id)
    try:
        outcome = await pipeline_of(context).index(project, document)
    except DocumentError as exc:
        # The document is refused for good: its failure is recorded on the document (the
        # dead-letter view) and the job itself is done; nothing would change on a retry.
        await _record_failure(deps, project, document, exc, final=True)
        return
    except Exception as exc:
        retry = context.app.tasks[INGEST].retry_strategy
        final = not isinstance(retry, BackoffRetry) or retry.gives_up(exc, context.job)
        await _record_failure(deps, project, document, exc, final=final)
        raise
    log.info(
        "document indexed",
        document_id=document_id,
        outcome=outcome.status,
        chunks=outcome.chunks,
        embedded=outcome.embedded,
        reused=outcome.reused,
    )
    if outcome.pack_due:
        await defer_pack(context.app, project_id)
    if deps.document_summaries and outcome.status == "indexed":
        deferrer = context.app.configure_task(
            SUMMARISE_DOCUMENT, queueing_lock=f"{SUMMARISE_DOCUMENT}:{document_id}"
        )
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(project_id=project_id, document_id=document_id)


async def _record_failure(
    deps: TaskDeps, project: uuid.UUID, document: uuid.UUID, exc: Exception, *, final: bool
) -> None:
    await deps.db.execute(
        "documents.fail",
        project_id=project,
        document_id=document,
        status="failed" if final else "pending",
        error=str(exc) or type(exc).__name__,
        error_code=exc.code if isinstance(exc, QuarryError) else "transient_error",
    )
    log.warning("document failed", document_id=str(document), final=final, error=str(exc))


async def reembed_document(
    context: procrastinate.JobContext, project_id: str, document_id: str
) -> None:
    count = await pipeline_of(context).reembed(uuid.UUID(project_id), uuid.UUID(document_id))
    log.info("document re-embedded", document_id=document_id, chunks=count)


async def pack_postings(context: procrastinate.JobContext, project_id: str) -> None:
    """Pack the project's postings into blocks (quarry.search.postings)."""
    deps = deps_of(context)
    await pack(deps.db, uuid.UUID(project_id), min_postings=deps.pack_min_postings)


async def sweep_blobs(context: procrastinate.JobContext, timestamp: int) -> None:
    """Delete the kept bytes no document uses, in every project (``Documents.sweep_all_blobs``).
    Periodic: ``timestamp`` is the time it was due, which Procrastinate passes."""
    documents = deps_of(context).documents
    if documents is None:
        raise RuntimeError("this worker was started without the document service")
    swept = await documents.sweep_all_blobs()
    log.info("kept bytes swept", **swept)


async def summarise_conversation(
    context: procrastinate.JobContext, project_id: str, conversation_id: str, through: int
) -> None:
    """Fold a conversation's turns up to ``through`` into its rolling summary."""
    deps = deps_of(context)
    if deps.gateway is None:
        raise RuntimeError("this worker was started without a model gateway")
    done = await summarise(
        deps.db, deps.gateway, uuid.UUID(project_id), uuid.UUID(conversation_id), through
    )
    log.info("conversation summarised", conversation_id=conversation_id, through=through, done=done)


async def summarise_document(
    context: procrastinate.JobContext, project_id: str, document_id: str
) -> None:
    """Write a document's rolling summary (role maintenance)."""
    deps = deps_of(context)
    if deps.gateway is None:
        raise RuntimeError("this worker was started without a model gateway")
    await write_document_summary(
        deps.db, deps.gateway, uuid.UUID(project_id), uuid.UUID(document_id)
    )


def register(
    app: procrastinate.App, *, max_attempts: int, retry_base: float, blob_sweep_cron: str = ""
) -> None:
    """``blob_sweep_cron``: when the sweep of kept bytes is queued (a cron line, with an
    optional sixth field of seconds); empty: never by itself."""
    retry = BackoffRetry(max_attempts, retry_base)
    # One sweep queued and one running at a time, however many workers queue it when due.
    sweep = app.task(
        name=SWEEP_BLOBS,
        pass_context=True,
        queue=SWEEP_QUEUE,
        lock=SWEEP_BLOBS,
        queueing_lock=SWEEP_BLOBS,
    )(sweep_blobs)
    if blob_sweep_cron:
        app.periodic(cron=blob_sweep_cron)(sweep)
    app.task(name=ECHO, pass_context=True, queue=DEFAULT_QUEUE)(echo)
    app.task(name=INGEST, pass_context=True, queue=INGEST_QUEUE, retry=retry)(ingest_document)
    app.task(name=REEMBED, pass_context=True, queue=INGEST_QUEUE, retry=retry)(reembed_document)
    app.task(name=PACK_POSTINGS, pass_context=True, queue=MAINTENANCE_QUEUE, retry=retry)(
        pack_postings
    )
    app.task(name=SUMMARISE_CONVERSATION, pass_context=True, queue=MAINTENANCE_QUEUE, retry=retry)(
        summarise_conversation
    )
    app.task(name=SUMMARISE_DOCUMENT, pass_context=True, queue=MAINTENANCE_QUEUE, retry=retry)(
        summarise_document
    )
