"""Process commands: serve, worker, db."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
import uvicorn

from quarry.app import create_app
from quarry.cli.common import out, print_json, run, settings_from
from quarry.db import migrate
from quarry.runtime import freeze_startup_heap, open_runtime
from quarry.settings import Settings

db_app = typer.Typer(no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
    app.command(name="worker")(worker)
    app.add_typer(db_app, name="db", help="Apply and inspect database migrations.")


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Interface to listen on [QUARRY_HOST]."),
    port: int | None = typer.Option(None, "--port", help="TCP port [QUARRY_PORT]."),
    worker: bool | None = typer.Option(
        None,
        "--worker/--no-worker",
        help="Run a job worker in this process [QUARRY_WORKER_IN_PROCESS; default: on for the "
        "embedded database].",
    ),
) -> None:
    """Start the HTTP API (and, on the embedded database, a worker)."""
    settings = settings_from(ctx, quiet=False, host=host, port=port, worker_in_process=worker)
    run(_serve(settings))


async def _serve(settings: Settings) -> None:
    async with open_runtime(settings, load_models=True) as rt:
        config = uvicorn.Config(
            create_app(settings, runtime=rt),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        freeze_startup_heap()
        await _Server(config).serve()


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it, which would kill the process before the
    runtime closes (pool, embedded Postgres). quarry stops gracefully and exits 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def worker(
    ctx: typer.Context,
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="Jobs run at once [QUARRY_WORKER_CONCURRENCY]."
    ),
) -> None:
    """Run a background job worker until stopped (SIGINT or SIGTERM)."""
    settings = settings_from(ctx, quiet=False, worker_concurrency=concurrency)
    run(_worker(settings))


async def _worker(settings: Settings) -> None:
    async with open_runtime(settings, load_models=True) as rt:
        freeze_startup_heap()
        await rt.run_worker(install_signal_handlers=True)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending migrations."""
    settings = settings_from(ctx, auto_migrate=False, bootstrap_admin=False)
    applied = run(_upgrade(settings))
    if not applied:
        out.print("database is up to date")
    for version, name in applied:
        out.print(f"applied {version:04d}_{name}")


async def _upgrade(settings: Settings) -> list[tuple[int, str]]:
    async with open_runtime(settings, migrate_now=False) as rt, rt.db.pool.connection() as conn:
        return [(m.version, m.name) for m in await migrate.upgrade(conn)]


@db_app.command("status")
def db_status(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Show which migrations are applied and which are pending."""
    settings = settings_from(ctx, auto_migrate=False, bootstrap_admin=False)
    state = run(_status(settings))
    if as_json:
        print_json(
            {
                "applied": state.applied,
                "latest": state.latest,
                "pending": state.pending,
                "current": state.current,
            }
        )
    else:
        out.print(state.describe())


async def _status(settings: Settings) -> migrate.MigrationStatus:
    async with open_runtime(settings, migrate_now=False) as rt, rt.db.pool.connection() as conn:
        return await migrate.status(conn)
