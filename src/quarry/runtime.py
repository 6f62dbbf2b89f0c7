"""The services one quarry process runs with, opened once at start and closed at exit.

``open_runtime`` is the single start-up path for the server, the worker and the CLI:
embedded Postgres (when no database URL is set) -> server checks -> pool -> migrations ->
first-start admin -> job queue.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import procrastinate
import structlog

from quarry.auth.service import ApiKeys
from quarry.db import migrate
from quarry.db.database import Database, StartupError, check_server, open_pool
from quarry.db.embedded import EmbeddedPostgres
from quarry.db.queries import Queries
from quarry.jobs.queue import Jobs, build_app
from quarry.settings import Settings
from quarry.tenancy.projects import Projects
from quarry.tenancy.users import NewUser, Users

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    job_app: procrastinate.App
    keys: ApiKeys
    users: Users
    projects: Projects
    jobs: Jobs


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate_now: bool | None = None
) -> AsyncIterator[Runtime]:
    async with AsyncExitStack() as stack:
        url = await _database_url(settings, stack)
        await check_server(url, settings.db_connect_timeout)
        pool = await open_pool(
            url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            wait_s=settings.db_connect_timeout,
        )
        stack.push_async_callback(pool.close)
        db = Database(pool, Queries.load())
        if settings.auto_migrate if migrate_now is None else migrate_now:
            await _upgrade(db)
        keys = ApiKeys(db)
        users = Users(db, keys)
        job_app = build_app()
        await job_app.open_async(pool)
        stack.push_async_callback(job_app.close_async)
        runtime = Runtime(
            settings=settings,
            db=db,
            job_app=job_app,
            keys=keys,
            users=users,
            projects=Projects(db, users),
            jobs=Jobs(db, job_app),
        )
        if settings.bootstrap_admin and await _schema_current(db):
            announce_admin(settings, await users.bootstrap_admin(settings.admin_key_path))
        yield runtime


async def _database_url(settings: Settings, stack: AsyncExitStack) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        url = await asyncio.to_thread(embedded.start)
    except Exception as exc:
        raise StartupError(
            f"cannot start the embedded Postgres in {embedded.pgdata}: {exc}\n"
            f"  fix: check that {settings.data_dir} is writable and see {embedded.pgdata / 'log'}"
        ) from exc
    stack.callback(embedded.stop)
    return url


async def _upgrade(db: Database) -> None:
    async with db.pool.connection() as conn:
        applied = await migrate.upgrade(conn)
    for migration in applied:
        log.info("migration applied", version=migration.version, name=migration.name)


async def _schema_current(db: Database) -> bool:
    async with db.pool.connection() as conn:
        return (await migrate.status(conn)).current


def announce_admin(settings: Settings, created: NewUser | None) -> None:
    """Print the first admin key once, to the terminal, never to the logs."""
    if created is None:
        return
    log.info("admin user created", user=created.user.name, key_file=str(settings.admin_key_path))
    print(
        f"quarry: created the admin user '{created.user.name}'. Its API key (shown once; "
        f"also saved to {settings.admin_key_path}, mode 0600):\n\n"
        f"    {created.api_key.secret}\n",
        file=sys.stderr,
        flush=True,
    )
