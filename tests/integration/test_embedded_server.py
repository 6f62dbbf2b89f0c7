"""The embedded server starts with the heap settings quarry gives it, and only it gets them."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from quarry.db.embedded import SERVER_MALLOC_ENV, EmbeddedPostgres, server_environment


def test_settings_already_in_the_environment_are_kept() -> None:
    mine = {"MALLOC_TRIM_THRESHOLD_": "0", "PATH": "/bin"}
    added = server_environment(mine)
    assert "MALLOC_TRIM_THRESHOLD_" not in added
    assert added == {k: v for k, v in SERVER_MALLOC_ENV.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    assert server_environment(SERVER_MALLOC_ENV) == {}


def test_the_embedded_server_keeps_freed_memory_and_quarry_does_not(tmp_path: Path) -> None:
    for name in SERVER_MALLOC_ENV:
        assert name not in os.environ, "the test needs an environment without them"
    server = EmbeddedPostgres(tmp_path)
    server.start()
    try:
        postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        environ = psutil.Process(postmaster).environ()
        for name, value in SERVER_MALLOC_ENV.items():
            assert environ.get(name) == value
        for name in SERVER_MALLOC_ENV:
            assert name not in os.environ  # taken out again once the server started
    finally:
        server.stop()
