"""The connection pool checks a connection before lending it only when it sat idle a while."""

from __future__ import annotations

import asyncio

import psycopg

from quarry.db.database import open_pool


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_connection_that_died_while_idle_is_replaced(fresh_database: str) -> None:
    pool = await open_pool(
        fresh_database, min_size=1, max_size=1, wait_s=10, check_after_idle_s=0.2
    )
    try:
        async with pool.connection() as conn:
            first = conn.info.backend_pid
        _terminate(fresh_database, first)
        await asyncio.sleep(0.4)  # idle past the threshold: checked, found dead, replaced
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
        assert row is not None
        assert row["pid"] != first
    finally:
        await pool.close()


async def test_a_connection_returned_a_moment_ago_is_lent_without_a_round_trip(
    fresh_database: str,
) -> None:
    pool = await open_pool(fresh_database, min_size=1, max_size=1, wait_s=10, check_after_idle_s=60)
    try:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        _terminate(fresh_database, pid)
        await asyncio.sleep(0.2)
        # Not checked (it was in use a moment ago), so the dead connection is lent as it is;
        # the caller's own statement finds out, and the pool discards it on return.
        async with pool.connection() as conn:
            assert conn.info.backend_pid == pid
            failed = False
            try:
                await conn.execute("SELECT 1")
            except psycopg.OperationalError:
                failed = True
        assert failed
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1 AS one")).fetchone()) == {"one": 1}
    finally:
        await pool.close()
