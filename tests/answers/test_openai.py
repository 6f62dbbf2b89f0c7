"""The OpenAI-compatible endpoint, driven by the official OpenAI SDK against a running quarry
(real uvicorn), answering through a scripted model server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from quarry.settings import Settings
from tests.answers.conftest import DOCS_TEXT, Served, running, scripted
from tests.chat_server import OK, ChatScript


@pytest.fixture
async def quarry(
    ingest_settings: Settings, model_url: str, embedder, tmp_path
) -> AsyncIterator[Served]:
    settings = scripted(ingest_settings, model_url, "generation")
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        yield s


@pytest.fixture
async def sdk(quarry: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{quarry.base_url}/v1", api_key=quarry.key)
    yield client
    await client.close()


async def test_models_are_the_projects_the_key_can_ask(sdk: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in sdk.models.list()]
    assert models == ["quarry/energy"]


async def test_the_sdk_gets_a_streamed_answer_with_citations(
    sdk: openai.AsyncOpenAI, script: ChatScript
) -> None:
    script.steps = ["text:Solar panels |make power [1]|, says [9]."]
    stream = await sdk.chat.completions.create(
        model="quarry/energy",
        messages=[{"role": "user", "content": "How do solar panels make electricity?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
    assert "".join(deltas) == "Solar panels make power [1], says [9]."
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    extra = finish[0].model_extra["quarry"]
    assert extra["answer"] == "Solar panels make power [1], says."  # [9] names no source
    assert extra["unknown_citations"] == [9]
    [citation] = extra["citations"]
    assert citation["number"] == 1
    assert citation["quote"] in DOCS_TEXT
    assert chunks[-1].choices == []  # include_usage: the usage chunk comes last
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0


async def test_the_sdk_gets_a_whole_answer_with_history(
    sdk: openai.AsyncOpenAI, script: ChatScript
) -> None:
    completion = await sdk.chat.completions.create(
        model="quarry/energy",
        messages=[
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "What turns wind into electricity?"},
            {"role": "assistant", "content": "Wind turbines do [1]."},
            {"role": "user", "content": [{"type": "text", "text": "And sunlight?"}]},
        ],
    )
    assert completion.choices[0].message.content == OK
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 7
    extra = completion.model_extra["quarry"]
    assert extra["answered"] is True
    assert extra["citations"][0]["number"] == 1
    sent = script.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert "pirate" not in sent[0]["content"]  # quarry's grounding instructions, not the client's
    assert sent[1]["content"] == "What turns wind into electricity?"
    assert sent[-1]["content"].endswith("Question: And sunlight?")


async def test_a_model_failing_mid_stream_is_an_error_the_sdk_raises(
    sdk: openai.AsyncOpenAI, script: ChatScript
) -> None:
    script.steps = ["cut:Solar panels |convert"]
    stream = await sdk.chat.completions.create(
        model="quarry/energy",
        messages=[{"role": "user", "content": "How do solar panels work?"}],
        stream=True,
    )
    deltas: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            deltas.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError, match="scripted failed after sending text"):
        await read()
    assert "".join(deltas) == "Solar panels convert"


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("gpt-4o", openai.UnprocessableEntityError),
        ("quarry/", openai.UnprocessableEntityError),
        ("quarry/nope", openai.NotFoundError),
    ],
)
async def test_a_model_that_is_no_project_is_refused(
    sdk: openai.AsyncOpenAI, script: ChatScript, model: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert script.requests == []


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "Hi"}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "x" * 4001}],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user", "content": "solar\u0000panels"}],
        [{"role": "user", "content": "   "}],
        [{"role": "user", "content": "x"}] * 201,
        [{"role": "assistant", "content": "x" * 199_000}, {"role": "user", "content": "y" * 1001}],
    ],
)
async def test_bad_messages_are_422(
    sdk: openai.AsyncOpenAI, script: ChatScript, messages: list
) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        await sdk.chat.completions.create(model="quarry/energy", messages=messages)
    assert script.requests == []


async def test_quarry_options_travel_in_extra_body(
    sdk: openai.AsyncOpenAI, script: ChatScript
) -> None:
    completion = await sdk.chat.completions.create(
        model="quarry/energy",
        messages=[{"role": "user", "content": "How do solar panels make electricity?"}],
        extra_body={"quarry": {"mode": "bm25", "k": 1, "budget": {"total": 1024}}},
    )
    assert completion.model_extra["quarry"]["context"]["passages"] == 1
    with pytest.raises(openai.UnprocessableEntityError):
        await sdk.chat.completions.create(
            model="quarry/energy",
            messages=[{"role": "user", "content": "solar?"}],
            extra_body={"quarry": {"budget": {"total": 100000}}},
        )


async def test_a_tiny_max_tokens_probe_is_answered(
    sdk: openai.AsyncOpenAI, script: ChatScript
) -> None:
    completion = await sdk.chat.completions.create(
        model="quarry/energy", messages=[{"role": "user", "content": "solar?"}], max_tokens=1
    )
    assert completion.choices[0].message.content
    assert script.requests[-1]["max_tokens"] == 16  # the smallest reserve a budget takes


async def test_two_answers_at_once_are_refused(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        await sdk.chat.completions.create(
            model="quarry/energy", messages=[{"role": "user", "content": "solar?"}], n=2
        )


async def test_the_quarry_key_is_the_api_key(quarry: Served) -> None:
    stranger = openai.AsyncOpenAI(base_url=f"{quarry.base_url}/v1", api_key="qk_not_a_key")
    with pytest.raises(openai.AuthenticationError):
        await stranger.models.list()
    await stranger.close()
