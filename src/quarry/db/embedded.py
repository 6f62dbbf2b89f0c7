"""The embedded default: a Postgres with pgvector from the pgserver wheel, in the data directory.

Any number of quarry processes (server, workers, CLI) may share one data directory. pgserver
keeps a list of the processes holding the server under an inter-process lock, starts the server
for the first and stops it when the last one lets go. A process killed with SIGKILL never lets
go, so its entry is pruned before each start; otherwise the server would never stop again.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

DATABASE_NAME = "quarry"


class EmbeddedPostgres:
    """One process's handle on the shared embedded server."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return the URL of the quarry database."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            # heavy and path-probing: imported only in the embedded mode
            from pgserver import postgres_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        _prune_dead_handles(self.pgdata, postgres_server.PostgresServer._lock)
        self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        _ensure_database(self._server.get_uri(), DATABASE_NAME)
        uri: str = self._server.get_uri(DATABASE_NAME)
        return uri

    def stop(self) -> None:
        """Let go of the server; it stops when no other process holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _prune_dead_handles(pgdata: Path, lock: Any) -> None:
    import psutil

    handles = pgdata / ".handle_pids.json"
    with lock:
        if not handles.exists():
            return
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _ensure_database(admin_uri: str, name: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found:
            return
        with contextlib.suppress(errors.DuplicateDatabase):  # another process was first
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
