"""The real `quarry serve`, CLI and worker as subprocesses."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.support import QuarryProcess, QuarryServer, free_port, quarry_env, run_cli

pytestmark = pytest.mark.acceptance


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _postgres_stopped(data_dir: Path, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while (data_dir / "pgdata" / "postmaster.pid").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_embedded_default_two_users_cannot_see_each_others_projects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = quarry_env(data_dir=data, worker_heartbeat_interval=1)
    server = QuarryServer(env, tmp_path / "serve.log")
    try:
        ready = server.wait_ready()
        assert all(check["ok"] for check in ready.json()["checks"].values())
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}

        key_file = data / "admin.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        admin_key = key_file.read_text().strip()
        assert server.output().count(admin_key) == 1  # printed once, never logged

        keys = {}
        for name in ("alice", "bob"):
            made = httpx.post(f"{server.url}/users", json={"name": name}, headers=_auth(admin_key))
            assert made.status_code == 201, made.text
            keys[name] = made.json()["api_key"]["secret"]
        ids = {}
        for name, key in keys.items():
            created = httpx.post(
                f"{server.url}/projects", json={"name": f"{name}-notes"}, headers=_auth(key)
            )
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]

        for me, other in (("alice", "bob"), ("bob", "alice")):
            mine = httpx.get(f"{server.url}/projects", headers=_auth(keys[me])).json()
            assert [p["name"] for p in mine] == [f"{me}-notes"]
            for ref in (ids[other], f"{other}-notes"):
                peek = httpx.get(f"{server.url}/projects/{ref}", headers=_auth(keys[me]))
                assert peek.status_code == 404
                assert peek.json()["code"] == "project_not_found"

        # The CLI shares the running server's embedded database and acts with admin.key.
        listed = run_cli("projects", "list", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert sorted(p["name"] for p in json.loads(listed.stdout)) == [
            "alice-notes",
            "bob-notes",
        ]
        as_bob = run_cli(
            "projects", "show", "alice-notes", env={**env, "QUARRY_API_KEY": keys["bob"]}
        )
        assert as_bob.returncode == 1
        assert "project_not_found" in as_bob.stderr

        # A whole key pasted where its prefix goes revokes it, and is never logged or echoed.
        bob = keys["bob"]
        mistyped = bob[:-1] + ("A" if bob[-1] != "A" else "B")
        missed = httpx.delete(f"{server.url}/keys/{mistyped}", headers=_auth(admin_key))
        assert missed.status_code == 404
        assert mistyped.split("_", 2)[2] not in missed.text
        revoked = httpx.delete(f"{server.url}/keys/{bob}", headers=_auth(admin_key))
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert httpx.get(f"{server.url}/me", headers=_auth(bob)).status_code == 401
        prefix = "_".join(bob.split("_", 2)[:2])
        assert f"/keys/{prefix}_***" in server.output()  # the request was logged, redacted
        for secret in (bob, mistyped):
            assert secret.split("_", 2)[2] not in server.output()
    finally:
        assert server.stop() == 0, server.output()
    assert _postgres_stopped(data)


def test_second_serve_on_the_same_data_directory_shares_the_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = quarry_env(data_dir=data, worker_heartbeat_interval=1)
    first = QuarryServer(env, tmp_path / "first.log")
    second: QuarryServer | None = None
    try:
        first.wait_ready()
        second = QuarryServer(env, tmp_path / "second.log")
        second.wait_ready()
        key = _auth((data / "admin.key").read_text().strip())
        made = httpx.post(f"{first.url}/projects", json={"name": "shared"}, headers=key)
        assert made.status_code == 201
        assert httpx.get(f"{second.url}/projects/shared", headers=key).status_code == 200
        assert first.stop() == 0
        # The database outlives the first server while the second still holds it.
        assert httpx.get(f"{second.url}/projects/shared", headers=key).status_code == 200
        assert second.wait_ready().status_code == 200
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.output()
    assert _postgres_stopped(data)


def test_the_same_port_twice_is_refused_cleanly(tmp_path: Path) -> None:
    env = quarry_env(data_dir=tmp_path / "data")
    first = QuarryServer(env, tmp_path / "first.log")
    try:
        first.wait_ready()
        clash = run_cli("serve", "--port", str(first.port), env=env, timeout=60)
        assert clash.returncode != 0
        assert "address already in use" in (clash.stdout + clash.stderr).lower()
        assert first.wait_ready().status_code == 200  # the first one is unharmed
    finally:
        assert first.stop() == 0


def test_external_database_with_separate_worker(fresh_database: str, tmp_path: Path) -> None:
    env = quarry_env(
        database_url=fresh_database, data_dir=tmp_path / "data", worker_heartbeat_interval=1
    )
    server = QuarryServer(env, tmp_path / "serve.log")
    worker = None
    try:
        not_ready = server.wait_for("/ready", 503)
        assert not not_ready.json()["checks"]["worker"]["ok"]  # no worker runs in the API
        worker = QuarryProcess(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
        server.wait_ready()
        key = _auth((tmp_path / "data" / "admin.key").read_text().strip())
        httpx.post(f"{server.url}/projects", json={"name": "ext"}, headers=key)
        job = httpx.post(
            f"{server.url}/projects/ext/jobs/echo", json={"message": "far"}, headers=key
        ).json()
        deadline = time.monotonic() + 30
        while True:
            seen = httpx.get(f"{server.url}/projects/ext/jobs/{job['id']}", headers=key).json()
            if seen["status"] == "succeeded":
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        assert seen["result"] == {"echo": "far", "worker": "quarry"}
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.output()
        assert server.stop() == 0, server.output()


def test_invalid_settings_stop_the_start_with_the_fix(tmp_path: Path) -> None:
    env = quarry_env(data_dir=tmp_path / "data", port="eighty")
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "QUARRY_PORT" in result.stderr
    assert "fix:" in result.stderr
    flag = run_cli("serve", "--port", "0", env=quarry_env(data_dir=tmp_path / "data"))
    assert flag.returncode == 2
    assert "QUARRY_PORT" in flag.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or written


def test_unreachable_external_database_fails_fast_with_its_address(tmp_path: Path) -> None:
    port = free_port()
    env = quarry_env(
        database_url=f"postgresql://quarry:hunter2@127.0.0.1:{port}/quarry",
        data_dir=tmp_path / "data",
    )
    started = time.monotonic()
    result = run_cli("serve", env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert f"127.0.0.1:{port}/quarry" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_help_lists_commands_with_descriptions(tmp_path: Path) -> None:
    result = run_cli("--help", env=quarry_env(data_dir=tmp_path))
    assert result.returncode == 0
    for command in ("serve", "worker", "db", "projects", "keys", "users"):
        assert command in result.stdout
    assert "Start the HTTP API" in result.stdout


def test_a_missing_embedding_model_stops_the_start_with_the_fix(
    fresh_database: str, tmp_path: Path
) -> None:
    env = quarry_env(
        database_url=fresh_database,
        data_dir=tmp_path / "data",
        embedding_model_path=tmp_path / "no-such-model",
    )
    result = run_cli("worker", env=env, timeout=120)
    assert result.returncode != 0
    assert "QUARRY_EMBEDDING_MODEL_PATH" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_admin_key_that_cannot_be_written_stops_the_start_with_the_fix(
    fresh_database: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.write_text("a file where the data directory should be")
    result = run_cli("worker", env=quarry_env(database_url=fresh_database, data_dir=data))
    assert result.returncode != 0
    assert "admin" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing half-made: the next start, with a directory, makes the admin and its key.
    data.unlink()
    users = run_cli(
        "users", "list", "--json", env=quarry_env(database_url=fresh_database, data_dir=data)
    )
    assert users.returncode == 0, users.stderr
    assert (data / "admin.key").is_file()
