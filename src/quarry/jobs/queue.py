"""The job queue: the Procrastinate app, enqueueing, reading jobs back, running workers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import procrastinate
import psycopg
import structlog
from procrastinate.exceptions import AlreadyEnqueued, UniqueViolation
from pydantic import BaseModel

from quarry.db.database import Database
from quarry.errors import JobNotFound
from quarry.jobs import tasks

log = structlog.get_logger(__name__)


class Job(BaseModel):
    id: int
    task: str
    status: str
    attempts: int
    queue: str
    scheduled_at: datetime | None = None
    result: dict[str, Any] | None = None
    finished_at: datetime | None = None


def build_app(
    *, max_attempts: int = 5, retry_base: float = 2.0, blob_sweep_cron: str = ""
) -> procrastinate.App:
    """A Procrastinate app with quarry's tasks; open it with ``open_async(pool)`` to share
    quarry's pool."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector())
    tasks.register(
        app, max_attempts=max_attempts, retry_base=retry_base, blob_sweep_cron=blob_sweep_cron
    )
    return app


# Refresh the job table's statistics after this many jobs were queued, or a quarter of the
# queue as last counted if that is more (see Jobs.enqueued).
ANALYZE_EVERY = 100


class Jobs:
    def __init__(self, db: Database, app: procrastinate.App) -> None:
        self.db = db
        self.app = app
        self._queued_since_analyze = 0
        self._analyze_after = ANALYZE_EVERY
        self._packs_requested: set[uuid.UUID] = set()  # by recover(), while still due

    async def enqueue_echo(self, project_id: uuid.UUID, message: str) -> Job:
        job_id = await self.app.configure_task(tasks.ECHO).defer_async(
            project_id=str(project_id), message=message
        )
        return await self.get(project_id, job_id)

    async def enqueue_ingest(self, project_id: uuid.UUID, document_id: uuid.UUID) -> None:
        await self._enqueue_document(tasks.INGEST, project_id, document_id)

    async def enqueue_ingest_many(
        self, project_id: uuid.UUID, document_ids: Sequence[uuid.UUID]
    ) -> None:
        """``enqueue_ingest`` for each document, in one statement. Where one of them already
        has a job queued (its queueing lock is taken) that statement fails as a whole and
        queues nothing, so each is then queued on its own, as ``enqueue_ingest`` would."""
        unique = list(dict.fromkeys(document_ids))
        if not unique:
            return
        jobs = [
            self._deferrer(tasks.INGEST, document_id).make_new_job(
                project_id=str(project_id), document_id=str(document_id)
            )
            for document_id in unique
        ]
        try:
            await self.app.job_manager.batch_defer_jobs_async(jobs)
        except AlreadyEnqueued:
            for document_id in unique:
                await self.enqueue_ingest(project_id, document_id)
            return
        await self.enqueued(len(unique))

    async def enqueue_reembed(
        self, project_id: uuid.UUID, document_id: uuid.UUID, *, priority: int = 0
    ) -> None:
        await self._enqueue_document(tasks.REEMBED, project_id, document_id, priority=priority)

    async def enqueue_conversation_summary(
        self, project_id: uuid.UUID, conversation_id: uuid.UUID, through: int
    ) -> None:
        """One queued job per conversation and ``through``; a conversation's jobs run one at a
        time (same lock), and one that finds its turns already summarised does nothing."""
        deferrer = self.app.configure_task(
            tasks.SUMMARISE_CONVERSATION,
            lock=f"conversation:{conversation_id}",
            queueing_lock=f"{tasks.SUMMARISE_CONVERSATION}:{conversation_id}:{through}",
        )
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(
                project_id=str(project_id), conversation_id=str(conversation_id), through=through
            )

    async def _enqueue_document(
        self, task: str, project_id: uuid.UUID, document_id: uuid.UUID, *, priority: int = 0
    ) -> None:
        """One queued job per document and task at a time; jobs of one document run one by
        one (same lock), and a job always works on the document's current version. Workers
        take jobs of a higher ``priority`` first, then in the order they were queued."""
        deferrer = self._deferrer(task, document_id, priority)
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(project_id=str(project_id), document_id=str(document_id))
            await self.enqueued(1)

    def _deferrer(
        self, task: str, document_id: uuid.UUID, priority: int = 0
    ) -> procrastinate.jobs.JobDeferrer:
        return self.app.configure_task(
            task,
            lock=f"doc:{document_id}",
            queueing_lock=f"{task}:{document_id}",
            priority=priority,
        )

    async def enqueued(self, count: int) -> None:
        """Keep the planner's picture of the queue current while it grows.

        Every worker takes its next job with Procrastinate's fetch query: the first queued
        job, by priority and id, whose lock no other job holds. With statistics that say the
        queue is empty (a new database, or one whose jobs had all finished when it was last
        analysed) Postgres plans it as "collect every queued job, check each one's lock, sort",
        so each fetch costs time in proportion to the queue, and a burst of thousands of
        documents costs Postgres more than indexing them (measured: 25 ms of Postgres CPU per
        job for 1,500 queued jobs, against 1.2 ms with fresh statistics, where the plan walks
        the priority index and stops at the first free job). Autovacuum would fix the
        statistics, but only a minute or more later. So the process that queues the jobs
        analyses the table after every ``ANALYZE_EVERY`` jobs, or a quarter of the queue if
        that is more (a few milliseconds each; a logarithmic number of times per burst)."""
        self._queued_since_analyze += count
        if self._queued_since_analyze < self._analyze_after:
            return
        self._queued_since_analyze = 0
        try:
            async with self.db.transaction() as conn:
                await self.db.execute("jobs.analyze_queue", conn)
                row = await self.db.fetch_one("jobs.queued", conn)
        except psycopg.Error as exc:
            # Only a plan gets worse without it; the jobs are queued, so the caller succeeded.
            log.warning("job table not analysed", error=str(exc))
            return
        queued = int(row["n"]) if row else 0
        self._analyze_after = max(ANALYZE_EVERY, queued // 4)

    async def get(self, project_id: uuid.UUID, job_id: int) -> Job:
        row = await self.db.fetch_one("jobs.get", project_id=project_id, job_id=job_id)
        if row is None:
            raise JobNotFound(f"no job {job_id} in this project")
        return Job(
            id=row["id"],
            task=row["task_name"],
            status=row["status"],
            attempts=row["attempts"],
            queue=row["queue_name"],
            scheduled_at=row["scheduled_at"],
            result=row["result"],
            finished_at=row["finished_at"],
        )

    async def recover(self, stalled_after: float, pack_after_chunks: int = 0) -> int:
        """Give the jobs of dead workers, and documents left without any job, a new run;
        and queue a pack for a project due one with none queued or running (at
        ``pack_after_chunks`` chunks since its last; 0 never): a re-analysis unpacks a whole
        project, and no write may follow to queue it. Returns the jobs and documents given a
        new run.

        One process recovers at a time (every worker runs this loop): two working through
        their own lists of stalled jobs would give a job a second run after a live worker
        had taken the first. A job whose runs are spent (its process died on each: a
        document that kills the worker, say) fails instead of killing the next one, and one
        whose queueing lock a newer queued job holds gives way to it."""
        async with self.db.transaction() as conn:
            row = await self.db.fetch_one("jobs.try_recovery_lock", conn)
            if row is None or not row["locked"]:
                return 0
            recovered = 0
            stalled = await self.app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=stalled_after
            )
            for job in stalled:
                if self._runs_spent(job):
                    await self._give_up(job)
                    continue
                try:
                    await self.app.job_manager.retry_job(job)
                except UniqueViolation:
                    # A newer job of the same document (or project) is queued; it works on the
                    # current state, so this one ends here and no longer blocks it.
                    await self.app.job_manager.finish_job(
                        job, status=procrastinate.jobs.Status.FAILED, delete_job=False
                    )
                    log.warning("stalled job superseded", job_id=job.id, task=job.task_name)
                    continue
                except Exception as exc:  # finished or retried meanwhile
                    log.debug("stalled job not retried", job_id=job.id, reason=repr(exc))
                    continue
                log.warning("stalled job retried", job_id=job.id, task=job.task_name)
                recovered += 1
            for row in await self.db.fetch_all("documents.orphaned", older_than_s=stalled_after):
                await self.enqueue_ingest(row["project_id"], row["id"])
                log.warning("orphaned document queued", document_id=str(row["id"]))
                recovered += 1
            if pack_after_chunks > 0:
                due = await self.db.fetch_all(
                    "jobs.packs_due",
                    pack_after=pack_after_chunks,
                    lock_prefix=tasks.PACK_LOCK_PREFIX,
                )
                # A project is queued once while it stays due: due still with no pack
                # pending, its pack failed (retried as any job is), and the project's next
                # writes queue another. Once not due, it is forgotten.
                self._packs_requested &= {row["project_id"] for row in due}
                for row in due:
                    if row["pending"] or row["project_id"] in self._packs_requested:
                        continue
                    self._packs_requested.add(row["project_id"])
                    if await tasks.defer_pack(self.app, str(row["project_id"])):
                        log.info("postings pack queued", project_id=str(row["project_id"]))
            return recovered

    def _runs_spent(self, job: procrastinate.jobs.Job) -> bool:
        """Whether the run that died was the job's last (``attempts``: the runs before it)."""
        task = self.app.tasks.get(job.task_name)
        retry = task.retry_strategy if task is not None else None
        return isinstance(retry, tasks.BackoffRetry) and job.attempts + 1 >= retry.max_attempts

    async def _give_up(self, job: procrastinate.jobs.Job) -> None:
        await self.app.job_manager.finish_job(
            job, status=procrastinate.jobs.Status.FAILED, delete_job=False
        )
        log.error("stalled job failed for good", job_id=job.id, task=job.task_name)
        if job.task_name == tasks.INGEST:
            kwargs = job.task_kwargs
            await self.db.execute(
                "documents.fail",
                project_id=uuid.UUID(str(kwargs["project_id"])),
                document_id=uuid.UUID(str(kwargs["document_id"])),
                status="failed",
                error=f"the worker indexing it stopped on each of its {job.attempts + 1} runs "
                "(killed, or out of memory)",
                error_code="worker_lost",
            )

    async def run_worker(
        self,
        *,
        deps: tasks.TaskDeps,
        concurrency: int,
        heartbeat_interval: float,
        stalled_after: float,
        install_signal_handlers: bool,
        drain_seconds: float,
        pack_after_chunks: int = 0,
        name: str = "quarry",
        queues: list[str] | None = None,
    ) -> None:
        """Run a worker until cancelled or signalled. Beside it, a loop takes over the jobs of
        workers that stopped sending heartbeats (killed, lost their machine). Stopping, the
        worker lets its running jobs finish for ``drain_seconds``, then stops them and queues
        them again: a drain past ``stalled_after`` would let other workers take jobs that
        still run here."""
        log.info("worker starting", concurrency=concurrency)
        stop = asyncio.Event()
        recovery = asyncio.create_task(
            self._recovery_loop(stalled_after, pack_after_chunks, stop), name="recovery"
        )
        try:
            await self.app.run_worker_async(
                concurrency=concurrency,
                name=name,
                # None: every queue (Procrastinate's default, which its types do not say).
                queues=queues,  # type: ignore[arg-type]
                install_signal_handlers=install_signal_handlers,
                update_heartbeat_interval=heartbeat_interval,
                stalled_worker_timeout=stalled_after,
                shutdown_graceful_timeout=drain_seconds,
                additional_context={tasks.CONTEXT_KEY: deps},
                worker_middleware=[_bind_job_to_logs, _give_way_to_a_queued_job],
            )
        finally:
            stop.set()
            await recovery

    async def _recovery_loop(
        self, stalled_after: float, pack_after_chunks: int, stop: asyncio.Event
    ) -> None:
        """Runs until ``stop`` is set. Not stopped by cancelling: a query cancelled midway
        surfaces through psycopg and procrastinate as an ordinary exception."""
        while not stop.is_set():
            try:
                await self.recover(stalled_after, pack_after_chunks)
            except Exception:
                log.exception("job recovery failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(stalled_after / 2, 0.5))


async def _bind_job_to_logs(call_next: Any, context: procrastinate.JobContext, worker: Any) -> Any:
    with structlog.contextvars.bound_contextvars(job_id=context.job.id, task=context.job.task_name):
        return await call_next()


async def _give_way_to_a_queued_job(
    call_next: Any, context: procrastinate.JobContext, worker: Any
) -> Any:
    """A job that fails while a newer one of its queueing lock is queued (a document's new
    version came in meanwhile) ends without a retry: the queued job works on the current
    state, and retrying this one would clash with it (a queueing lock allows one queued job),
    leaving this one running for ever and the queued one blocked behind its lock."""
    try:
        return await call_next()
    except Exception:
        lock = context.job.queueing_lock
        if lock is None:
            raise
        row = await tasks.deps_of(context).db.fetch_one("jobs.queued_with_lock", lock=lock)
        if row is None or not row["queued"]:
            raise
        log.warning("job failed; a newer one of its lock is queued and takes over", lock=lock)
        return None
