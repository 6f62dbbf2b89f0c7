from pathlib import Path

import pytest

from quarry.gateway.config import ModelConfig
from quarry.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("QUARRY_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_laptop_setup() -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.run_worker_in_process
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir.name == "quarry"
    assert settings.admin_key_path == settings.data_dir / "admin.key"


def test_environment_then_file_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    monkeypatch.setenv("QUARRY_CONFIG", str(config))
    monkeypatch.setenv("QUARRY_PORT", "9002")
    settings = load_settings()
    assert settings.port == 9002  # environment beats the file
    assert settings.host == "0.0.0.0"  # the file beats the default
    assert settings.log_level == "debug"
    assert load_settings(port=9003).port == 9003  # a CLI flag beats both


def test_config_given_explicitly(tmp_path: Path) -> None:
    config = tmp_path / "q.toml"
    config.write_text("worker_concurrency = 7\n")
    assert load_settings(config=config).worker_concurrency == 7


def test_external_database_turns_off_the_in_process_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_DATABASE_URL", "postgresql://u:secret@db.example:5432/q")
    settings = load_settings()
    assert not settings.embedded
    assert not settings.run_worker_in_process
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("QUARRY_PORT", "eighty", "QUARRY_PORT"),
        ("QUARRY_PORT", "70000", "QUARRY_PORT"),
        ("QUARRY_LOG_LEVEL", "loud", "QUARRY_LOG_LEVEL"),
        ("QUARRY_DATABASE_URL", "mysql://x@y/z", "QUARRY_DATABASE_URL"),
        ("QUARRY_AUTO_MIGRATE", "perhaps", "QUARRY_AUTO_MIGRATE"),
        ("QUARRY_DB_CONNECT_TIMEOUT", "-1", "QUARRY_DB_CONNECT_TIMEOUT"),
        ("QUARRY_LOCAL_EMBEDDING_WORKERS", "-1", "QUARRY_LOCAL_EMBEDDING_WORKERS"),
        ("QUARRY_LOCAL_EMBEDDING_WORKERS", "two", "QUARRY_LOCAL_EMBEDDING_WORKERS"),
        ("QUARRY_LOCAL_EMBEDDING_PRECISION", "float16", "QUARRY_LOCAL_EMBEDDING_PRECISION"),
        ("QUARRY_INDEX_NICENESS", "-5", "QUARRY_INDEX_NICENESS"),  # would need privileges
        ("QUARRY_INDEX_NICENESS", "20", "QUARRY_INDEX_NICENESS"),
        ("QUARRY_BLOB_SWEEP_CRON", "hourly", "QUARRY_BLOB_SWEEP_CRON"),
        ("QUARRY_BLOB_SWEEP_CRON", "61 * * * *", "QUARRY_BLOB_SWEEP_CRON"),
        ("QUARRY_BLOB_SWEEP_CRON", "0 0 31 2 *", "QUARRY_BLOB_SWEEP_CRON"),  # never due
    ],
)
def test_invalid_setting_names_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert named in message
    assert "fix:" in message


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "q.toml"
    config.write_text("prot = 80\n")
    with pytest.raises(SettingsError, match="QUARRY_PROT"):
        load_settings(config=config)


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config=tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(config=broken)


def test_pool_bounds_are_checked_together() -> None:
    with pytest.raises(SettingsError, match="db_pool_min_size"):
        load_settings(db_pool_min_size=5, db_pool_max_size=2)


def test_the_answer_reserve_must_leave_room_for_a_prompt() -> None:
    with pytest.raises(SettingsError, match="answer_reserve"):
        load_settings(answer_budget=512, answer_reserve=512)
    assert load_settings(answer_budget=512, answer_reserve=128).answer_reserve == 128


def test_worker_timings_are_checked_together() -> None:
    defaults = load_settings()
    # A stopping worker drains its jobs for the stalled time less two heartbeats by default.
    assert defaults.worker_drain_seconds == 30 - 2 * 10
    assert load_settings(worker_shutdown_timeout=5).worker_drain_seconds == 5
    with pytest.raises(SettingsError, match="worker_stalled_after"):
        load_settings(worker_heartbeat_interval=45)  # healthy workers would look stalled
    with pytest.raises(SettingsError, match="worker_shutdown_timeout"):
        load_settings(worker_shutdown_timeout=20)  # 20 + 10 is not under 30
    with pytest.raises(SettingsError, match="ready_worker_stale_after"):
        load_settings(worker_heartbeat_interval=60, worker_stalled_after=180)


def test_passage_focusing_is_off_at_zero_and_needs_sixteen_tokens_when_on() -> None:
    assert load_settings().context_passage_tokens == 128
    assert load_settings(context_passage_tokens=0).context_passage_tokens == 0
    with pytest.raises(SettingsError, match="context_passage_tokens"):
        load_settings(context_passage_tokens=8)


def test_models_and_roles_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text(
        '[models.gpt]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nprice_input = 0.15\n\n'
        '[roles]\ngeneration = ["gpt", "local"]\nsummaries = ["local"]\n'
    )
    settings = load_settings(config=config)
    assert settings.model_table["gpt"].model == "gpt-4o-mini"
    assert settings.model_table["gpt"].price_input == 0.15
    assert settings.model_table["local"].provider == "local"  # built-ins stay
    roles = settings.model_roles
    assert roles["generation"] == ["gpt", "local"]
    assert roles["summaries"] == ["local"]
    assert roles["embedding"] == ["local-embedding"]  # roles not named keep their default


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[roles]\ngeneration = ["ghost"]\n', "names the model 'ghost'"),
        ("[roles]\ngeneration = []\n", "has no models"),
        ('[models.x]\nprovider = "openai"\ntemperature = 9\n', "models"),
        ('[models.x]\nprovider = "openai"\nshoe_size = 9\n', "models"),
        ('[models.x]\nmodel = "m"\n', "models"),
    ],
)
def test_bad_models_and_roles_name_the_setting(tmp_path: Path, toml: str, problem: str) -> None:
    config = tmp_path / "quarry.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError, match=problem):
        load_settings(config=config)


def test_the_local_model_path_setting_reaches_the_builtin_model(tmp_path: Path) -> None:
    settings = load_settings(generation_model_path=tmp_path / "m.gguf")
    assert settings.model_table["local"].path == tmp_path / "m.gguf"
    assert load_settings().model_table["local"].path is None


def test_reranker_kind() -> None:
    # Unset: late interaction with the local embedder, nothing with a remote one.
    assert load_settings().reranker_kind == "late_interaction"
    remote = load_settings(
        embedding_provider="openai_compatible",
        embedding_base_url="http://127.0.0.1:9/v1",
        embedding_model="e5",
    )
    assert remote.reranker_kind is None
    assert load_settings(reranker="none").reranker_kind is None
    assert load_settings(reranker="none", reranker_model="/models/ce").reranker_kind is None
    assert load_settings(reranker_model="/models/ce").reranker_kind == "cross_encoder"
    assert load_settings(reranker="llm").reranker_kind == "llm"
    assert load_settings(reranker="late_interaction").reranker_kind == "late_interaction"
    assert load_settings().rerank_depth is None  # each reranker's own depth
    with pytest.raises(SettingsError, match="reranker cross_encoder needs reranker_model"):
        load_settings(reranker="cross_encoder")


def test_fetch_allowed_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    assert load_settings().fetch_allowed_networks == []  # public addresses only
    monkeypatch.setenv("QUARRY_FETCH_ALLOWED_NETWORKS", '["10.1.0.0/16", "fd00::/8"]')
    assert load_settings().fetch_allowed_networks == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    ]
    monkeypatch.setenv("QUARRY_FETCH_ALLOWED_NETWORKS", '["10.1.0.300/16"]')
    with pytest.raises(SettingsError, match="QUARRY_FETCH_ALLOWED_NETWORKS"):
        load_settings()


def test_the_blob_sweep_schedule_is_a_cron_line_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().blob_sweep_cron == "23 * * * *"
    monkeypatch.setenv("QUARRY_BLOB_SWEEP_CRON", " */5 * * * * 30 ")
    assert load_settings().blob_sweep_cron == "*/5 * * * * 30"
    monkeypatch.setenv("QUARRY_BLOB_SWEEP_CRON", "")
    assert load_settings().blob_sweep_cron == ""


def test_unknown_quarry_variables_are_named_with_the_setting_they_resemble() -> None:
    settings = Settings()
    settings.models["cloud"] = ModelConfig(
        provider="openai", model="gpt-4o-mini", api_key_env="QUARRY_CLOUD_KEY"
    )
    environ = {
        "QUARRY_RERANK": "none",
        "QUARRY_PORT": "8000",
        "quarry_log_level": "debug",  # read whatever its case
        "quarry_bogus": "1",
        "QUARRY_CLOUD_KEY": "sk-...",  # a model's key: not a setting, not unknown
        "QUARRY_ZZZ": "1",
        "PATH": "/bin",
    }
    assert settings.unknown_environment(environ) == [
        "QUARRY_RERANK (did you mean QUARRY_RERANKER?)",
        "QUARRY_ZZZ",
        "quarry_bogus",
    ]
