"""Task definitions. Tasks get the process's services through the job context.

Tasks are plain functions registered on each App by ``register``: a module-level Blueprint
would be global state shared by every App in the process. Every task takes ``project_id``:
jobs are scoped by project like everything else.
"""

from __future__ import annotations

from typing import Any

import procrastinate
from psycopg.types.json import Jsonb

from quarry.db.database import Database

CONTEXT_KEY = "quarry_db"
ECHO = "quarry:echo"


def database_of(context: procrastinate.JobContext) -> Database:
    db = context.additional_context[CONTEXT_KEY]
    assert isinstance(db, Database)
    return db


async def echo(context: procrastinate.JobContext, project_id: str, message: str) -> None:
    """The smallest job that proves the loop: it stores what it was given as its result."""
    assert context.job.id is not None
    result: dict[str, Any] = {"echo": message, "worker": context.worker_name}
    await database_of(context).execute(
        "jobs.save_result", job_id=context.job.id, project_id=project_id, result=Jsonb(result)
    )


def register(app: procrastinate.App) -> None:
    app.task(name=ECHO, pass_context=True, queue="default")(echo)
