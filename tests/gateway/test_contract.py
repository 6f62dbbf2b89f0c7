"""The contract every provider passes: the same calls, the same shapes, the same guarantees.

local and openai_compatible run for real (the bundled SmolLM2 in-process, and llama.cpp's
OpenAI-compatible server over the same file); openai and anthropic answer through their SDKs
from recorded wire responses."""

from __future__ import annotations

import pytest

from quarry.gateway.config import ModelConfig
from quarry.gateway.providers.openai_compatible import OpenAICompatibleProvider
from quarry.gateway.registry import Provider
from quarry.gateway.types import Message, StreamEnd
from tests.gateway.support import anthropic_model, gateway, openai_model, records
from tests.gateway.wire import (
    Script,
    anthropic_contract,
    openai_contract,
)

PROVIDERS = ["local", "openai_compatible", "openai", "anthropic"]
QUESTION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40}},
    "required": ["answer"],
}


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest, closing: list) -> Provider:
    kind = request.param
    if kind == "local":
        return request.getfixturevalue("local_model")
    if kind == "openai_compatible":
        base = request.getfixturevalue("llama_server")
        made = OpenAICompatibleProvider(
            "served",
            ModelConfig(
                provider="openai_compatible",
                base_url=base,
                model="smollm2",
                structured_output="json_object",
                max_tokens=48,
                timeout=60,
                price_input=0,
                price_output=0,
            ),
            {},
        )
    elif kind == "openai":
        made = openai_model(Script(openai_contract()))
    else:
        made = anthropic_model(Script(anthropic_contract()))
    closing.append(made)
    return made


async def test_generate(provider: Provider) -> None:
    gw = gateway(provider)
    done = await gw.generate("generation", QUESTION, max_tokens=24, temperature=0)
    assert done.text.strip()
    assert done.usage.input_tokens > 0
    assert 0 < done.usage.output_tokens <= 24
    assert done.usage.model == provider.name
    assert done.usage.cost is not None
    assert done.finish_reason is not None
    [record] = await records(gw)
    assert record.outcome == "ok"
    assert record.operation == "generate"


async def test_stream_deltas_add_up_to_the_answer(provider: Provider) -> None:
    gw = gateway(provider)
    deltas: list[str] = []
    end: StreamEnd | None = None
    async for item in gw.stream("generation", QUESTION, max_tokens=24, temperature=0):
        if isinstance(item, StreamEnd):
            end = item
        else:
            assert end is None, "no delta after the end"
            deltas.append(item)
    assert end is not None
    assert end.ok
    assert len(deltas) >= 2
    assert end.text == "".join(deltas)
    assert 0 < end.usage.output_tokens <= 24
    assert end.usage.ttft_ms is not None
    assert end.usage.ttft_ms <= end.usage.latency_ms


async def test_json_schema_output_validates(provider: Provider) -> None:
    gw = gateway(provider)
    done = await gw.generate_json(
        "analysis" if False else "generation", QUESTION, SCHEMA, max_tokens=40, temperature=0
    )
    assert isinstance(done.value, dict)
    assert isinstance(done.value["answer"], str)
    assert len(done.value["answer"]) <= 40


async def test_count_tokens(provider: Provider) -> None:
    short = provider.count_tokens("Paris")
    long = provider.count_tokens("Paris is the capital and largest city of France.")
    assert 0 < short < long
    messages = [Message("user", "Paris is the capital and largest city of France.")]
    assert provider.count_tokens(messages) > long  # the chat framing costs tokens too


async def test_probe_reaches_the_model(provider: Provider) -> None:
    assert await provider.probe() is None


async def test_context_window_is_known_or_none(provider: Provider) -> None:
    window = await provider.context_window()
    assert window is None or window >= 512
