"""`quarry ask` and `quarry chat` as a user runs them: real processes, the bundled models."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support import quarry_env, run_cli


def test_ask_streams_an_answer_and_chat_keeps_a_conversation(
    fresh_database: str, tmp_path: Path
) -> None:
    env = quarry_env(database_url=fresh_database, data_dir=tmp_path / "data")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "solar.txt").write_text(
        "Solar panels convert sunlight into electricity. Output drops on cloudy days."
    )
    (docs / "bread.txt").write_text("Bread is made from flour, water, salt and yeast.")
    assert run_cli("projects", "create", "kb", env=env).returncode == 0
    loaded = run_cli("ingest", str(docs), "--project", "kb", env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr

    asked = run_cli(
        "ask", "How do solar panels make electricity?", "--project", "kb", env=env, timeout=300
    )
    assert asked.returncode == 0, asked.stderr
    answer, _, sources = asked.stdout.partition("\n")
    assert answer.strip()
    for number in {int(n) for n in re.findall(r"\[(\d+)\]", answer)}:
        assert re.search(rf"^\[{number}\] ", sources, re.MULTILINE), asked.stdout

    as_json = run_cli("ask", "What is bread made from?", "-p", "kb", "--json", env=env, timeout=300)
    assert json.loads(as_json.stdout)["answered"] is True
    nothing = run_cli("ask", "zyxwv qqqq", "-p", "kb", env=env, timeout=300)
    assert "found nothing" in nothing.stdout
    empty = run_cli("ask", "", "-p", "kb", env=env)
    assert empty.returncode == 1
    assert "question" in empty.stderr

    chat = run_cli(
        "chat", "-p", "kb", env=env, timeout=300,
        stdin="How do solar panels make electricity?\nWhat is bread made from?\n/exit\n",
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip()  # the answers, as they streamed
    conversation = re.search(r"conversation ([0-9a-f-]{36})", chat.stderr)
    assert conversation is not None, chat.stderr
    again = run_cli(
        "chat", "-p", "kb", "--conversation", conversation.group(1), env=env, timeout=300,
        stdin="And on cloudy days?\n",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert conversation.group(1) in again.stderr
    unknown = run_cli(
        "chat", "-p", "kb", "-c", "00000000-0000-0000-0000-000000000000", env=env, stdin=""
    )
    assert unknown.returncode == 1
    assert "conversation_not_found" in unknown.stderr
