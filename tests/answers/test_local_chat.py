"""Conversations and the OpenAI-compatible endpoint with the real bundled model (SmolLM2
through llama.cpp), the real pipeline and a running quarry."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import openai
import pytest

from quarry.settings import Settings
from tests.answers.conftest import DOCS_TEXT, Served, events, running

BUDGET = {"total": 1024, "answer_reserve": 96, "history": 100}


@pytest.fixture
async def local(ingest_settings: Settings, embedder, tmp_path) -> AsyncIterator[Served]:
    async with running(ingest_settings, embedder, tmp_path / "admin.key") as s:
        yield s


async def test_a_streamed_answer_cites_only_passages_it_was_given(local: Served) -> None:
    http = local.http
    cid = (await http.post("/projects/energy/conversations", json={})).json()["id"]
    seen: dict[str, list[dict]] = {}
    async with http.stream(
        "POST",
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "How do solar panels make electricity?", "budget": BUDGET},
        headers={"Accept": "text/event-stream"},
    ) as response:
        async for name, data in events(response):
            seen.setdefault(name, []).append(data)
    assert list(seen) == ["start", "result", "llm_chunk", "complete"]
    sources = {r["number"]: r for r in seen["result"]}
    assert all(r["text"] in DOCS_TEXT for r in sources.values())
    complete = seen["complete"][0]
    streamed = "".join(d["text"] for d in seen["llm_chunk"])
    assert streamed.strip()
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", complete["answer"])}
    assert numbers == {c["number"] for c in complete["citations"]}
    assert numbers <= set(sources)  # every [n] left names a passage the model read
    for citation in complete["citations"]:
        assert citation["quote"] == sources[citation["number"]]["text"]
    usage = complete["usage"]
    assert usage["model"] == "local"
    assert usage["input_tokens"] + BUDGET["answer_reserve"] <= BUDGET["total"]  # hard budget
    assert complete["timings"]["first_token_ms"] < complete["timings"]["total_ms"]
    stored = (await http.get(f"/projects/energy/conversations/{cid}")).json()["messages"]
    assert stored[1]["content"] == complete["answer"]
    assert stored[1]["status"] == "complete"


@pytest.fixture
async def short_history(ingest_settings: Settings, embedder, tmp_path) -> AsyncIterator[Served]:
    """quarry configured to keep 100 tokens of history (what BUDGET asks of one request)."""
    settings = ingest_settings.model_copy(update={"answer_history_budget": BUDGET["history"]})
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        yield s


async def test_a_conversation_of_several_turns_stays_under_budget(short_history: Served) -> None:
    http = short_history.http
    cid = (await http.post("/projects/energy/conversations", json={})).json()["id"]
    turns = [
        "How do solar panels make electricity?",
        "What happens to their output on cloudy days?",
        "How do wind turbines make electricity?",
        "Why do tides rise and fall?",
    ]
    left_out = most_turns = 0
    for content in turns:
        budget = {k: v for k, v in BUDGET.items() if k != "history"}  # the configured one
        sent = await http.post(
            f"/projects/energy/conversations/{cid}/messages",
            json={"content": content, "budget": budget},
        )
        assert sent.status_code == 200, sent.text
        body = sent.json()
        assert body["history"]["tokens"] <= body["history"]["budget_tokens"] <= BUDGET["history"]
        assert body["context"]["tokens"] <= body["context"]["budget_tokens"]
        left_out = max(left_out, body["history"]["left_out"])
        most_turns = max(most_turns, body["history"]["turns"])
        if body["usage"] is not None:  # the prompt, counted by the model itself, fits
            assert body["usage"]["input_tokens"] + BUDGET["answer_reserve"] <= BUDGET["total"]
    # Earlier turns rode along where they fitted (whether the last one does depends on how
    # long the model's previous answer was).
    assert most_turns >= 1
    assert left_out > 0  # the budget could not hold every earlier turn
    # The turns that no longer fit the configured budget are folded into a summary by the
    # worker (SmolLM2 again).
    for _ in range(600):
        conversation = (await http.get(f"/projects/energy/conversations/{cid}")).json()
        if conversation["summarized_through"] > 0:
            break
        await asyncio.sleep(0.1)
    assert conversation["summary"].strip()
    assert conversation["message_count"] == 2 * len(turns)


async def test_the_openai_sdk_gets_a_streamed_answer_from_quarry(local: Served) -> None:
    client = openai.AsyncOpenAI(base_url=f"{local.base_url}/v1", api_key=local.key)
    stream = await client.chat.completions.create(
        model="quarry/energy",
        messages=[{"role": "user", "content": "What is bread made from?"}],
        stream=True,
        max_tokens=64,
    )
    text = ""
    last = None
    async for chunk in stream:
        last = chunk
        for choice in chunk.choices:
            text += choice.delta.content or ""
    await client.close()
    assert text.strip()
    assert last is not None
    extra = last.model_extra["quarry"]
    assert extra["answered"] is True
    assert {c["number"] for c in extra["citations"]} <= set(
        range(1, 1 + extra["context"]["passages"])
    )
