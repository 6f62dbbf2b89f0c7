"""One HNSW index per embedding model.

Vectors of every model share ``chunk_embeddings.embedding``, a ``vector`` column without a
fixed dimension (a re-index to another model must not need a schema change). HNSW needs a
dimension, so each model gets a partial expression index: ``embedding::vector(dims)`` over the
rows ``WHERE model = '<model>'``. The vector query casts the same way and names the model as a
literal, so the planner matches that index. It is made (concurrently, without blocking
writes) when a process first writes or searches that model's vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import psycopg
import structlog
from psycopg import sql

from quarry.db.database import Database

log = structlog.get_logger(__name__)

# An advisory lock key: one process builds an index at a time.
_LOCK = 0x7175617279_0005  # "quary" + migration number


def index_name(model: str, dims: int) -> str:
    digest = hashlib.sha256(model.encode()).hexdigest()[:12]
    return f"chunk_embeddings_hnsw_{digest}_{dims}"


class VectorIndexes:
    def __init__(self, db: Database, *, m: int = 16, ef_construction: int = 64) -> None:
        self.db = db
        self.m = m
        self.ef_construction = ef_construction
        self._ready: set[tuple[str, int]] = set()
        self._building = asyncio.Lock()  # one coroutine of this process does the work

    async def ensure(self, model: str, dims: int) -> None:
        if (model, dims) in self._ready or dims <= 0:
            return
        async with self._building:
            if (model, dims) not in self._ready:
                await self._ensure(model, dims)
                self._ready.add((model, dims))

    async def _ensure(self, model: str, dims: int) -> None:
        name = index_name(model, dims)
        statement = sql.SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON chunk_embeddings "
            "USING hnsw ((embedding::vector({dims})) vector_cosine_ops) "
            "WITH (m = {m}, ef_construction = {ef}) WHERE model = {model}"
        ).format(
            name=sql.Identifier(name),
            dims=sql.Literal(dims),
            m=sql.Literal(self.m),
            ef=sql.Literal(self.ef_construction),
            model=sql.Literal(model),
        )
        # CREATE INDEX CONCURRENTLY cannot run in a transaction: a connection of its own. It
        # also waits for every transaction running when it starts, so waiting for the build
        # lock must not be one: a blocking pg_advisory_lock would be, and would deadlock with
        # the build it waits for. Poll with the non-blocking form instead.
        conninfo = self.db.pool.conninfo
        assert isinstance(conninfo, str), "the pool is opened with a URL"
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            while True:
                state = await self._state(conn, name)
                if state is True:
                    break
                if await self._try_lock(conn):
                    try:
                        state = await self._state(conn, name)
                        if state is False:  # an interrupted build leaves an invalid index
                            await conn.execute(
                                sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name))
                            )
                        if state is not True:
                            log.info("building vector index", index=name, model=model, dims=dims)
                            await conn.execute(statement)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
                    break
                await asyncio.sleep(0.2)  # another process is building it

    @staticmethod
    async def _state(conn: psycopg.AsyncConnection[Any], name: str) -> bool | None:
        """True: the index is ready; False: it exists but is invalid; None: no such index."""
        row = await (
            await conn.execute(
                "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
                " WHERE c.relname = %s",
                (name,),
            )
        ).fetchone()
        return None if row is None else bool(row[0])

    @staticmethod
    async def _try_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK,))).fetchone()
        return bool(row and row[0])
