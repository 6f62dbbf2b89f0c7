"""Migrations produce the schema the code expects."""

import asyncio
import re
from datetime import UTC, datetime

import psycopg
import pytest

from quarry.db import migrate
from quarry.db.queries import Queries

# Tables that are the tenancy itself or belong to the job queue; every other table is
# domain data and must be scoped by project.
# Model usage outlives a deleted project (spend is history) and covers calls made for no project;
# the response cache keys on the project inside its hash instead of a column; a deleted
# project's record outlives the project until the sweep takes its files.
NOT_PROJECT_SCOPED = {
    "deleted_projects",
    "users",
    "api_keys",
    "projects",
    "schema_migrations",
    "model_usage",
    "model_cache",
}

TEMPLATE_FRAGMENTS = {"{filters}": "TRUE", "{dims}": "3", "{model}": "'m'", "{prelimit}": "ALL"}


def _positional(query: str) -> str:
    """psycopg's %(name)s (and binary %(name)b) placeholders as the $n PREPARE understands."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)[sb]", number, query).replace("%%", "%")


async def test_migrations_apply_to_an_empty_database(empty_database: str) -> None:
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        before = await migrate.status(conn)
        assert before.applied == 0
        assert not before.current
        applied = await migrate.upgrade(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.discover()]
        assert (await migrate.status(conn)).current
        assert await migrate.upgrade(conn) == []  # a second run applies nothing


async def test_concurrent_upgrades_apply_each_migration_once(empty_database: str) -> None:
    async def one() -> list[int]:
        async with await psycopg.AsyncConnection.connect(empty_database) as conn:
            return [m.version for m in await migrate.upgrade(conn)]

    results = await asyncio.gather(*(one() for _ in range(4)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in migrate.discover()]


def test_key_expiries_past_year_9999_become_readable(fresh_database: str) -> None:
    """Migration 0012 mends the rows the API let through before it took expiries into UTC."""
    (mend,) = [m for m in migrate.discover() if m.version == 12]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        user = conn.execute("INSERT INTO users (name) VALUES ('u') RETURNING id").fetchone()
        assert user is not None
        for prefix, expiry in [("far", "10000-01-01 00:59:59+00"), ("near", "2100-01-01 00:00+00")]:
            conn.execute(
                "INSERT INTO api_keys (user_id, prefix, secret_hash, expires_at)"
                " VALUES (%s, %s, '', %s::timestamptz)",
                (user[0], prefix, expiry),
            )
        with pytest.raises(psycopg.DataError):
            conn.execute("SELECT expires_at FROM api_keys WHERE prefix = 'far'").fetchone()
        conn.execute(mend.sql)
        rows = dict(conn.execute("SELECT prefix, expires_at FROM api_keys").fetchall())
    assert rows["far"] == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert rows["near"] == datetime(2100, 1, 1, tzinfo=UTC)


def test_every_named_query_prepares_against_the_migrated_schema(fresh_database: str) -> None:
    queries = Queries.load()
    assert len(queries) > 20
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        for i, name in enumerate(queries):
            # Templates get the simplest fragment of each kind their callers pass.
            text = queries[name]
            for placeholder, fragment in TEMPLATE_FRAGMENTS.items():
                text = text.replace(placeholder, fragment)
            assert "{" not in text, f"query {name} has an unknown placeholder"
            # A utility statement cannot be prepared: it runs (it takes no parameters).
            utility = re.sub(r"--.*", "", text).strip().upper().startswith("ANALYZE")
            try:
                conn.execute(text if utility else f"PREPARE q{i} AS {_positional(text)}")
            except psycopg.Error as exc:
                pytest.fail(f"query {name} does not fit the schema: {exc}")


def test_every_domain_table_is_scoped_by_project(fresh_database: str) -> None:
    with psycopg.connect(fresh_database) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
                "AND table_name NOT LIKE 'procrastinate%%'"
            )
        ]
        scoped = {
            row[0]
            for row in conn.execute(
                """SELECT c.conrelid::regclass::text FROM pg_constraint c
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
                   WHERE c.contype = 'f' AND c.confrelid = 'projects'::regclass
                     AND a.attname = 'project_id' AND a.attnotnull"""
            )
        }
    domain = set(tables) - NOT_PROJECT_SCOPED
    assert domain, "expected at least one domain table"
    assert domain <= scoped, f"not scoped by project_id: {sorted(domain - scoped)}"


def test_the_vector_extension_is_installed(fresh_database: str) -> None:
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None
