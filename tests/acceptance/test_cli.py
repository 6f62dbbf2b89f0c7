"""The CLI on its own, against a database of this test's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import quarry_env, run_cli

pytestmark = pytest.mark.acceptance


def test_db_upgrade_on_an_empty_database(empty_database: str, tmp_path: Path) -> None:
    env = quarry_env(database_url=empty_database, data_dir=tmp_path / "data")
    status = run_cli("db", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current"] is False
    first = run_cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_tenancy" in first.stdout
    again = run_cli("db", "upgrade", env=env)
    assert "up to date" in again.stdout
    assert json.loads(run_cli("db", "status", "--json", env=env).stdout)["current"] is True


def test_projects_keys_and_users_from_the_cli(fresh_database: str, tmp_path: Path) -> None:
    env = quarry_env(database_url=fresh_database, data_dir=tmp_path / "data")

    def cli(*args: str, **extra: str) -> str:
        result = run_cli(*args, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli("projects", "create", "handbook", "--description", "how we work")
    shown = json.loads(cli("projects", "show", "handbook", "--json"))
    assert shown["description"] == "how we work"
    assert shown["role"] == "owner"
    assert [p["name"] for p in json.loads(cli("projects", "list", "--json"))] == ["handbook"]

    carol = cli("users", "create", "carol").strip()
    assert carol.startswith("qk_")
    cli("projects", "add-member", "handbook", "carol", "--role", "editor")
    members = json.loads(cli("projects", "members", "handbook", "--json"))
    assert {(m["user_name"], m["role"]) for m in members} == {
        ("admin", "owner"),
        ("carol", "editor"),
    }
    assert (
        json.loads(cli("projects", "list", "--json", QUARRY_API_KEY=carol))[0]["role"] == "editor"
    )
    # An owner who is no admin invites; the user joins by accepting, by the project's id.
    dave = cli("users", "create", "dave").strip()
    cli("projects", "create", "carols", QUARRY_API_KEY=carol)
    invited = cli("projects", "add-member", "carols", "dave", QUARRY_API_KEY=carol)
    assert "invited dave" in invited
    (invitation,) = json.loads(cli("projects", "invitations", "--json", QUARRY_API_KEY=dave))
    assert (invitation["project_name"], invitation["invited_by"]) == ("carols", "carol")
    assert json.loads(cli("projects", "list", "--json", QUARRY_API_KEY=dave)) == []
    cli("projects", "accept", invitation["project_id"], QUARRY_API_KEY=dave)
    joined = json.loads(cli("projects", "list", "--json", QUARRY_API_KEY=dave))
    assert [(p["name"], p["role"]) for p in joined] == [("carols", "viewer")]
    cli("projects", "delete", "carols", "--yes", QUARRY_API_KEY=carol)

    keys_before = json.loads(cli("keys", "list", "--json"))
    for days in ("1e9", "3000000", "inf", "nan"):  # past the year 9999, or not a time at all
        bad = run_cli("keys", "create", "--expires-in-days", days, env=env)
        assert bad.returncode == 2, (days, bad.stderr)
        assert "--expires-in-days" in bad.stderr
        assert "Traceback" not in bad.stderr
    assert json.loads(cli("keys", "list", "--json")) == keys_before

    made = json.loads(cli("keys", "create", "--name", "ci", "--expires-in-days", "1", "--json"))
    assert made["key"]["expires_at"] is not None
    listed = json.loads(cli("keys", "list", "--json"))
    assert made["key"]["prefix"] in [k["prefix"] for k in listed]
    assert made["secret"] not in json.dumps(listed)
    cli("keys", "revoke", made["key"]["prefix"])
    refused = run_cli("projects", "list", env={**env, "QUARRY_API_KEY": made["secret"]})
    assert refused.returncode == 1
    assert "api_key_revoked" in refused.stderr

    denied = run_cli(
        "projects", "delete", "handbook", "--yes", env={**env, "QUARRY_API_KEY": carol}
    )
    assert denied.returncode == 1
    assert "forbidden" in denied.stderr
    cli("projects", "delete", "handbook", "--yes")
    assert json.loads(cli("projects", "list", "--json")) == []


def test_cli_without_a_key_says_how_to_get_one(fresh_database: str, tmp_path: Path) -> None:
    env = quarry_env(
        database_url=fresh_database, data_dir=tmp_path / "data", bootstrap_admin="false"
    )
    result = run_cli("projects", "list", env=env)
    assert result.returncode == 1
    assert "QUARRY_API_KEY" in result.stderr


def test_reindex_wait_fails_when_documents_could_not_be_re_embedded(
    fresh_database: str, tmp_path: Path
) -> None:
    from tests.embedding_server import Script, embedding_server

    script = Script()
    with embedding_server(script) as url:
        env = quarry_env(
            database_url=fresh_database,
            data_dir=tmp_path / "data",
            embedding_provider="openai_compatible",
            embedding_base_url=url,
            embedding_model="test-model",
            ingest_max_attempts=1,
        )
        assert run_cli("projects", "create", "notes", env=env).returncode == 0
        document = tmp_path / "a.txt"
        document.write_text("Some text to embed.")
        ingested = run_cli("ingest", str(document), "--project", "notes", env=env)
        assert ingested.returncode == 0, ingested.stderr
        # A new model, whose vectors the project does not have, and a server that refuses.
        env = {**env, "QUARRY_EMBEDDING_MODEL": "test-model-2"}
        script.steps = ["400"] * 20
        refused = run_cli("reindex", "--project", "notes", "--wait", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "1 of 1 document(s) could not be re-embedded" in refused.stderr
        script.steps = []
        again = run_cli("reindex", "--project", "notes", "--wait", env=env)
        assert again.returncode == 0, again.stderr
        assert "re-embedded 1 document(s)" in again.stdout
