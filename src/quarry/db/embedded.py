"""The embedded default: a Postgres with pgvector from the pgserver wheel, in the data directory.

Any number of quarry processes (server, workers, CLI) may share one data directory. pgserver
keeps a list of the processes holding the server under an inter-process lock, starts the server
for the first and stops it when the last one lets go. A process killed with SIGKILL never lets
go, so its entry is pruned before each start; otherwise the server would never stop again.

The server starts with glibc's heap told to keep what it frees (``SERVER_MALLOC_ENV``). By
default glibc gives the top of a process's heap back to the kernel as soon as a little of it is
free, and takes it back at the next allocation a page at a time, each a fault and a page of
zeros. A backend inserting a vector into an HNSW index loads the neighbours it compares into
memory it frees at the end of the insert, so every insert paid those faults again. Keeping the
memory took Postgres' CPU per ingested document down by about a sixth with the bundled model,
a third with random vectors (bench/README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

DATABASE_NAME = "quarry"
# glibc reads these when a process starts, and the backends inherit the server's. Each backend
# keeps up to 4 MiB spare at the top of its heap, gives memory back only past 16 MiB free, and
# takes allocations of up to 8 MiB from the heap rather than from mmap (setting any of the
# three turns off glibc's own adjustment of the last, which would otherwise map and unmap
# every block of 128 KiB or more). Measured: about 90 MiB more held by the server's processes
# at the peak of an ingestion run. A variable already set in quarry's environment is kept.
SERVER_MALLOC_ENV = {
    "MALLOC_TOP_PAD_": str(4 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(16 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(8 << 20),
}
_environ_lock = threading.Lock()


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
        # pgserver starts the server with this process's environment (pg_ctl inherits it).
        with _environment(server_environment(os.environ)):
            self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        _ensure_database(self._server.get_uri(), DATABASE_NAME)
        uri: str = self._server.get_uri(DATABASE_NAME)
        return uri

    def stop(self) -> None:
        """Let go of the server; it stops when no other process holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def server_environment(current: Mapping[str, str]) -> dict[str, str]:
    """What the server's environment adds to ``current``: the heap settings it lacks."""
    return {name: value for name, value in SERVER_MALLOC_ENV.items() if name not in current}


@contextlib.contextmanager
def _environment(added: Mapping[str, str]) -> Iterator[None]:
    """``added`` in this process's environment while the block runs (for the processes it
    starts), then taken out again."""
    with _environ_lock:
        os.environ.update(added)
        try:
            yield
        finally:
            for name in added:
                os.environ.pop(name, None)


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
