"""The job queue: the Procrastinate app, enqueueing, reading jobs back, running workers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import procrastinate
import structlog
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


def build_app() -> procrastinate.App:
    """A Procrastinate app with quarry's tasks; open it with ``open_async(pool)`` to share
    quarry's pool."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector())
    tasks.register(app)
    return app


class Jobs:
    def __init__(self, db: Database, app: procrastinate.App) -> None:
        self.db = db
        self.app = app

    async def enqueue_echo(self, project_id: uuid.UUID, message: str) -> Job:
        job_id = await self.app.configure_task(tasks.ECHO).defer_async(
            project_id=str(project_id), message=message
        )
        return await self.get(project_id, job_id)

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

    async def run_worker(
        self,
        *,
        concurrency: int,
        heartbeat_interval: float,
        install_signal_handlers: bool,
        name: str = "quarry",
    ) -> None:
        """Run a worker until cancelled or signalled; jobs finish or are retried elsewhere."""
        log.info("worker starting", concurrency=concurrency)
        await self.app.run_worker_async(
            concurrency=concurrency,
            name=name,
            install_signal_handlers=install_signal_handlers,
            update_heartbeat_interval=heartbeat_interval,
            additional_context={tasks.CONTEXT_KEY: self.db},
            worker_middleware=[_bind_job_to_logs],
        )


async def _bind_job_to_logs(call_next: Any, context: procrastinate.JobContext, worker: Any) -> Any:
    with structlog.contextvars.bound_contextvars(job_id=context.job.id, task=context.job.task_name):
        return await call_next()
