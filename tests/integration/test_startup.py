"""Starting against databases that cannot serve quarry fails fast and says why."""

import os
import stat
import time
from pathlib import Path

import psycopg
import pytest

from quarry.db.database import StartupError
from quarry.runtime import open_runtime
from quarry.settings import Settings
from quarry.tenancy.users import ADMIN_NAME
from tests.support import free_port

# The Postgres 15 these machines run, which has no pgvector (see DEVELOPERS.md).
SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


async def test_unreachable_database_fails_fast_with_its_address(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        database_url=f"postgresql://quarry:pw@127.0.0.1:{port}/quarry", data_dir=tmp_path
    )
    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        async with open_runtime(settings):
            pass
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{port}/quarry" in str(caught.value)
    assert "pw" not in str(caught.value)


async def test_server_without_pgvector_is_refused(tmp_path: Path) -> None:
    with psycopg.connect(SYSTEM_POSTGRES) as conn:
        has_vector = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    assert has_vector is None, "this test needs a Postgres without pgvector on 127.0.0.1:5432"
    settings = Settings(database_url=SYSTEM_POSTGRES, data_dir=tmp_path)
    with pytest.raises(StartupError, match="pgvector"):
        async with open_runtime(settings):
            pass


async def test_first_start_makes_one_admin_and_a_private_key_file(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"bootstrap_admin": True, "data_dir": tmp_path / "d"})
    async with open_runtime(settings) as rt:
        key_file = settings.admin_key_path
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        principal = await rt.keys.authenticate_key(key_file.read_text().strip())
        assert principal.is_admin
        assert principal.user_name == ADMIN_NAME
        first_key = key_file.read_text()
    async with open_runtime(settings) as rt:
        assert key_file.read_text() == first_key  # a second start changes nothing
        assert [u.name for u in await rt.users.list_all(principal)] == [ADMIN_NAME]


async def test_concurrent_first_starts_make_exactly_one_admin(
    settings: Settings, tmp_path: Path
) -> None:
    import asyncio

    async with open_runtime(settings) as rt:
        made = await asyncio.gather(
            *(rt.users.bootstrap_admin(tmp_path / f"k{i}") for i in range(5))
        )
        assert sum(m is not None for m in made) == 1
