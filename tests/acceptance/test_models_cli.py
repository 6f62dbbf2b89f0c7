"""quarry models and quarry usage, as a user runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from quarry.runtime import Runtime
from quarry.tenancy.models import Principal
from quarry.tenancy.users import NewUser
from tests.support import quarry_env, run_cli

pytestmark = pytest.mark.acceptance


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = quarry_env(data_dir=tmp_path / "data", **values)
    env.pop("OPENAI_API_KEY", None)
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def test_models_lists_every_role_offline_by_default(tmp_path: Path) -> None:
    result = run_cli("models", "--json", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["role"] for r in rows} == {
        "analysis",
        "embedding",
        "generation",
        "maintenance",
        "rerank",
    }
    assert all(r["reachable"] for r in rows)
    by_role = {r["role"]: r for r in rows}
    assert by_role["generation"]["provider"] == "local"
    assert by_role["embedding"]["provider"] == "sentence_transformers"


def test_models_shows_chains_and_unreachable_models(tmp_path: Path) -> None:
    models = {
        "gpt": {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"},
        "nowhere": {"provider": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"},
    }
    env = _env(
        tmp_path,
        models=json.dumps(models),
        roles=json.dumps({"generation": ["gpt", "nowhere", "local"]}),
    )
    env["OPENAI_API_KEY"] = "sk-test"
    result = run_cli("models", "--json", env=env)
    assert result.returncode == 0, result.stderr
    chain = [r for r in json.loads(result.stdout) if r["role"] == "generation"]
    assert [(r["position"], r["model"]) for r in chain] == [
        (1, "gpt"),
        (2, "nowhere"),
        (3, "local"),
    ]
    assert [r["reachable"] for r in chain] == [False, False, True]
    assert "connection failed" in chain[0]["problem"]
    table = run_cli("models", env=env)
    assert "nowhere" in table.stdout


def test_a_provider_without_its_key_stops_with_the_variable_named(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        models=json.dumps({"gpt": {"provider": "openai", "model": "gpt-4o-mini"}}),
        roles=json.dumps({"generation": ["gpt"]}),
    )
    result = run_cli("models", env=env)
    assert result.returncode != 0
    assert "OPENAI_API_KEY" in result.stderr
    serve = run_cli("projects", "list", env=env)  # any command that starts the runtime
    assert serve.returncode != 0
    assert "OPENAI_API_KEY" in serve.stderr


def test_a_role_naming_an_unknown_model_is_a_settings_error(tmp_path: Path) -> None:
    result = run_cli("models", env=_env(tmp_path, roles=json.dumps({"generation": ["ghost"]})))
    assert result.returncode == 2
    assert "ghost" in result.stderr


async def test_usage_by_model_and_day(
    runtime: Runtime,
    admin: NewUser,
    admin_principal: Principal,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    project = await runtime.projects.create(admin_principal, "spend", "", "english")
    other = await runtime.projects.create(admin_principal, "other", "", "english")
    ask = [{"role": "user", "content": "Say yes."}]
    for _ in range(2):
        await runtime.gateway.generate("generation", ask, project_id=project.id, max_tokens=3)
    await runtime.gateway.generate("generation", ask, project_id=other.id, max_tokens=3)
    await runtime.gateway.flush()
    env = _env(tmp_path, database_url=fresh_database, api_key=admin.api_key.secret)
    result = await asyncio.to_thread(run_cli, "usage", "--project", "spend", "--json", env=env)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["model"] == "local"
    assert row["calls"] == 2
    assert row["input_tokens"] > 0
    assert 0 < row["output_tokens"] <= 6
    assert row["cost"] == 0.0
    table = await asyncio.to_thread(run_cli, "usage", "--project", "spend", env=env)
    assert "total" in table.stdout
    everyone = await asyncio.to_thread(run_cli, "usage", "--json", env=env)
    assert sum(r["calls"] for r in json.loads(everyone.stdout)) == 3
