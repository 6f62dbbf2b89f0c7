"""Apply numbered migrations, once, under an advisory lock (safe with concurrent starts)."""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.(sql|py)")
# An arbitrary constant shared by every quarry process: "quarry migrations".
_LOCK_KEY = 0x71_7279_6D69_67


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationStatus:
    applied: int
    latest: int
    pending: list[int]

    @property
    def current(self) -> bool:
        return not self.pending and self.applied == self.latest

    def describe(self) -> str:
        if self.applied > self.latest:
            return (
                f"database schema is at {self.applied}, newer than this quarry ({self.latest}): "
                "upgrade quarry"
            )
        if self.pending:
            return f"{len(self.pending)} migration(s) pending: run `quarry db upgrade`"
        return f"at {self.applied}"


@functools.cache
def discover() -> list[Migration]:
    """Every migration shipped in quarry.db.migrations, in version order."""
    found: list[Migration] = []
    folder = resources.files("quarry.db.migrations")
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if not match:
            continue
        version, name, kind = int(match.group(1)), match.group(2), match.group(3)
        if kind == "sql":
            text = entry.read_text(encoding="utf-8")
        else:
            module = importlib.import_module(f"quarry.db.migrations.{entry.name[:-3]}")
            make: Callable[[], str] = module.sql
            text = make()
        found.append(Migration(version, name, text))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must run 1, 2, 3, ... without gaps: {versions}")
    return found


async def _applied(conn: AsyncConnection[Any]) -> set[int]:
    exists = await (
        await conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    ).fetchone()
    if not exists or not _first(exists):
        return set()
    rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
    return {int(_first(row)) for row in rows}


def _first(row: Any) -> Any:
    return row[0] if isinstance(row, tuple) else next(iter(row.values()))


async def status(conn: AsyncConnection[Any]) -> MigrationStatus:
    migrations = discover()
    async with conn.transaction():  # leaves the connection as it found it
        applied = await _applied(conn)
    pending = [m.version for m in migrations if m.version not in applied]
    return MigrationStatus(max(applied, default=0), migrations[-1].version, pending)


async def upgrade(conn: AsyncConnection[Any]) -> list[Migration]:
    """Apply pending migrations; each in its own transaction. Returns those applied."""
    was_autocommit = conn.autocommit
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = await _applied(conn)
        done: list[Migration] = []
        for migration in discover():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)  # shipped SQL, never input
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        await conn.set_autocommit(was_autocommit)
