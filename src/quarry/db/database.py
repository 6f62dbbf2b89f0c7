"""The connection pool and the named-query helpers every service uses."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString
from urllib.parse import parse_qs, urlsplit

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from quarry.db.queries import Queries

Conn = AsyncConnection[DictRow]
MIN_SERVER_VERSION = 150000
# A pooled connection idle for longer than this is checked (a round trip) before it is lent.
CHECK_AFTER_IDLE_S = 2.0


# A query's name in db/queries, or one rendered from a template (Database.render).
Query = str | sql.Composed


class StartupError(Exception):
    """The service cannot start; the message says why and what to do."""


class Database:
    """A pool plus the named queries; the one way services talk to Postgres."""

    def __init__(self, pool: AsyncConnectionPool[Conn], queries: Queries) -> None:
        self.pool = pool
        self.queries = queries

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    def render(self, query: str, **fragments: sql.Composable) -> sql.Composed:
        """A named query whose ``{placeholders}`` are filled with SQL fragments (identifiers,
        literals, compiled filters); values still travel as parameters."""
        return sql.SQL(self.queries[query]).format(**fragments)

    async def fetch_one(
        self, query: Query, conn: Conn | None = None, /, **params: Any
    ) -> dict[str, Any] | None:
        async with self._conn(conn) as c:
            cur = await c.execute(self._sql(query), params)
            return await cur.fetchone()

    async def fetch_all(
        self, query: Query, conn: Conn | None = None, /, **params: Any
    ) -> list[DictRow]:
        async with self._conn(conn) as c:
            cur = await c.execute(self._sql(query), params)
            return await cur.fetchall()

    async def fetch_all_binary(
        self, query: Query, conn: Conn | None = None, /, **params: Any
    ) -> list[DictRow]:
        """fetch_all with the results in Postgres' binary format: bytea arrives as bytes
        rather than as hex text to decode (search.bm25_postings sends arrays so)."""
        async with self._conn(conn) as c:
            cur = await c.execute(self._sql(query), params, binary=True)
            return await cur.fetchall()

    async def fetch_each(
        self, query: Query, conn: Conn | None, params_seq: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any] | None]:
        """One statement run once per parameter set, all sent in one round trip (psycopg's
        pipeline), in order: each run's first row, or None where it returned none."""
        async with self._conn(conn) as c:
            cur = c.cursor()
            await cur.executemany(self._sql(query), params_seq, returning=True)
            rows: list[dict[str, Any] | None] = []
            async for result in cur.results():
                rows.append(await result.fetchone())
            return rows

    async def execute_many(
        self, query: Query, conn: Conn | None, params_seq: Sequence[Mapping[str, Any]]
    ) -> None:
        """One statement run once per parameter set, all sent in one round trip."""
        async with self._conn(conn) as c:
            await c.cursor().executemany(self._sql(query), params_seq)

    async def execute(self, query: Query, conn: Conn | None = None, /, **params: Any) -> int:
        """Run a statement; return the number of rows it touched."""
        async with self._conn(conn) as c:
            cur = await c.execute(self._sql(query), params)
            return cur.rowcount

    def _sql(self, query: Query) -> LiteralString | sql.Composed:
        return self.queries[query] if isinstance(query, str) else query

    @asynccontextmanager
    async def _conn(self, conn: Conn | None) -> AsyncIterator[Conn]:
        if conn is not None:
            yield conn
        else:
            async with self.pool.connection() as pooled:
                yield pooled


def describe_address(url: str) -> str:
    """host:port/database of a URL, without credentials, for messages."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host", ["localhost"])[0])
    port = parts.port or 5432
    database = parts.path.lstrip("/") or "(default)"
    return f"{host}:{port}/{database}"


async def check_server(url: str, connect_timeout: float) -> None:
    """Fail fast, with the address, when the server is unreachable or unfit for quarry."""
    address = describe_address(url)
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, connect_timeout=max(1, int(connect_timeout))
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StartupError(
            f"cannot connect to Postgres at {address}: {reason}\n"
            "  fix: start that server, or correct QUARRY_DATABASE_URL "
            "(unset it to use the embedded database)."
        ) from None
    async with conn:
        version = conn.info.server_version
        if version < MIN_SERVER_VERSION:
            raise StartupError(
                f"Postgres at {address} is version {version // 10000}; quarry needs 15 or newer."
            )
        cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if await cur.fetchone() is None:
            raise StartupError(
                f"Postgres at {address} does not have the pgvector extension ('vector').\n"
                "  fix: install pgvector on that server (for example the postgresql-NN-pgvector "
                "package), or unset QUARRY_DATABASE_URL to use the embedded database."
            )


async def _configure(conn: Conn) -> None:
    """Every pooled connection: autocommit, and pgvector's type adapted (numpy arrays in and
    out).

    Autocommit makes a statement outside ``Database.transaction()`` its own transaction, one
    round trip. Without it psycopg opened a transaction implicitly (BEGIN) and the pool
    committed it when the connection came back (COMMIT): three round trips for every lone
    statement, the most common kind, Procrastinate's included (bench/README.md). It is set
    here rather than in the pool's connection arguments, which Procrastinate's listener
    reuses with an autocommit of its own."""
    await conn.set_autocommit(True)
    try:
        await register_vector_async(conn)
    except psycopg.ProgrammingError:
        # Not migrated yet (no vector type): /ready reports the pending migrations.
        await conn.rollback()


class _IdleCheck:
    """Checks a pooled connection before lending it only when it has sat idle a while.

    A connection that was in use a moment ago is as good as a connection gets; one that sat
    idle may have been closed by the server, a proxy or a restart. Checking every checkout
    costs a round trip each time a connection is taken, which for a document being indexed
    (a dozen checkouts: the job queue, the claim, the write) was a tenth of the Python time.
    """

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._returned: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

    async def returned(self, conn: Conn) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: Conn) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > self.after_s:
            await AsyncConnectionPool.check_connection(conn)


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    wait_s: float,
    check_after_idle_s: float = CHECK_AFTER_IDLE_S,
    session_settings: Mapping[str, str] | None = None,
) -> AsyncConnectionPool[Conn]:
    """The pool every service shares. ``session_settings`` are given to every connection
    when it starts (``-c name=value`` options, after any the URL has), so they are its
    session's defaults: what ``RESET`` returns to, with no statement to run for them."""
    idle = _IdleCheck(check_after_idle_s)
    kwargs: dict[str, Any] = {"row_factory": dict_row}
    if session_settings:
        given = conninfo_to_dict(url).get("options") or ""
        added = " ".join(f"-c {name}={value}" for name, value in session_settings.items())
        kwargs["options"] = f"{given} {added}".strip()
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=wait_s,
        kwargs=kwargs,
        connection_class=AsyncConnection[DictRow],
        configure=_configure,
        check=idle.check,
        reset=idle.returned,
        name="quarry",
    )
    await pool.open(wait=True, timeout=wait_s)
    return pool
