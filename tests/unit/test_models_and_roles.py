from pathlib import Path

import pytest

from quarry.db.database import describe_address
from quarry.errors import InvalidInput
from quarry.modelfiles import check_embedding_model, check_gguf
from quarry.tenancy.models import Role
from quarry.tenancy.projects import validate_name


def test_roles_are_ordered() -> None:
    assert Role.owner.allows(Role.editor)
    assert Role.editor.allows(Role.viewer)
    assert not Role.viewer.allows(Role.editor)
    assert not Role.editor.allows(Role.owner)


@pytest.mark.parametrize("name", ["a", "team-docs", "x1", "a" * 63])
def test_valid_project_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-a", "Team", "a_b", "a b", "a" * 64, "é", "12345678-1234-5678-1234-567812345678"],
)
def test_invalid_project_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_name(name)


def test_address_for_messages_has_no_password() -> None:
    assert describe_address("postgresql://u:hunter2@db.internal:6543/q") == "db.internal:6543/q"
    assert describe_address("postgresql://u@/q?host=/run/pg") == "/run/pg:5432/q"


def test_gguf_check(tmp_path: Path) -> None:
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 16)
    bad = tmp_path / "n.gguf"
    bad.write_bytes(b"PK\x03\x04")
    assert check_gguf(good).ok
    assert not check_gguf(bad).ok
    assert "cannot read" in check_gguf(tmp_path / "absent.gguf").detail
    assert not check_gguf(None).ok


def test_embedding_model_check(tmp_path: Path) -> None:
    assert not check_embedding_model(tmp_path).ok
    for name in ("config.json", "modules.json", "tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    assert check_embedding_model(tmp_path).ok
