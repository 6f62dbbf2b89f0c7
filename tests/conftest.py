"""Shared fixtures: one embedded Postgres per session, a fresh database per test.

The session's server comes from the pgserver wheel (Postgres 16 + pgvector) in a temporary
directory. Migrations run once into a template database; each test gets a copy made with
CREATE DATABASE ... TEMPLATE, which takes milliseconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from quarry.db import migrate
from quarry.runtime import Runtime, open_runtime
from quarry.settings import Settings
from quarry.tenancy.models import Principal
from quarry.tenancy.users import NewUser
from tests.support import app_client

TEMPLATE = "quarry_template"


@dataclass(frozen=True)
class PgServer:
    admin_url: str

    def url(self, database: str) -> str:
        return self.admin_url.replace("/postgres?", f"/{database}?", 1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import postgres_server

    server = postgres_server.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    try:
        pg = PgServer(server.get_uri())
        _create_template(pg)
        yield pg
    finally:
        server.cleanup()


def _create_template(pg: PgServer) -> None:
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(pg.url(TEMPLATE)) as conn:
            await migrate.upgrade(conn)

    asyncio.run(apply())


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, migrated database of this test's own."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    yield pg_server.url(name)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new database with nothing in it (not even migrations)."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url(name)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(fresh_database: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=fresh_database,
        data_dir=tmp_path / "data",
        bootstrap_admin=False,
        worker_in_process=False,
        worker_heartbeat_interval=0.5,
        log_format="console",
        blob_sweep_cron="",  # a test that wants the hourly sweep asks for it
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture
async def admin(runtime: Runtime, tmp_path: Path) -> NewUser:
    created = await runtime.users.bootstrap_admin(tmp_path / "admin.key")
    assert created is not None
    return created


@pytest.fixture
def admin_principal(admin: NewUser) -> Principal:
    return Principal(user_id=admin.user.id, user_name=admin.user.name, is_admin=True)


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over the real app (lifespan run), sharing the test's runtime."""
    async with app_client(settings, runtime) as http:
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session (seconds)."""
    from quarry.ingest.factory import load_local_model

    return load_local_model(Settings(data_dir=Path("/nonexistent"), log_format="console"))


@pytest.fixture(scope="session")
def minilm_float32():
    """The same model kept in float32 whatever this CPU is (the session's ``minilm`` runs in
    bfloat16 where that is faster): for checks of exact arithmetic, such as padding being
    masked out, which bfloat16's rounding blurs at the 1e-3 level."""
    from quarry.ingest.factory import load_local_model

    return load_local_model(
        Settings(
            data_dir=Path("/nonexistent"), log_format="console", local_embedding_precision="float32"
        )
    )


@pytest.fixture
async def embedder(minilm):
    from quarry.ingest.embedders import LocalEmbedder

    # Keeping token vectors, as the default settings make it (late interaction reranks hybrid).
    local = LocalEmbedder(minilm, keep_token_vectors=True)
    yield local
    await local.aclose()


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ingest_retry_base": 0.0,
            "ingest_max_attempts": 3,
            "worker_concurrency": 8,
            "fetch_timeout": 1.0,
            # The tests' sites listen on loopback, which a URL document may not reach unless
            # it is allowed; every other private range stays refused.
            "fetch_allowed_networks": [ipaddress.ip_network("127.0.0.0/8")],
        }
    )


@pytest.fixture
async def ingest_runtime(ingest_settings: Settings, embedder) -> AsyncIterator[Runtime]:
    async with open_runtime(ingest_settings, embedder=embedder) as rt:
        yield rt


@pytest.fixture
async def ingest_client(
    ingest_settings: Settings, ingest_runtime: Runtime
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the real model, with a worker running inside it."""
    settings = ingest_settings.model_copy(update={"worker_in_process": True})
    async with app_client(settings, ingest_runtime) as http:
        yield http


def pytest_unconfigure(config: pytest.Config) -> None:
    """llama-cpp-python opens two /dev/null files at import and never closes them; close them
    once every model is closed, so the interpreter does not warn about them at exit."""
    utils = sys.modules.get("llama_cpp._utils")
    if utils is not None:
        utils.outnull_file.close()
        utils.errnull_file.close()
