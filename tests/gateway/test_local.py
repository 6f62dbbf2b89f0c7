"""The local provider for real: the bundled SmolLM2-135M-Instruct through llama.cpp."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from quarry.gateway.config import ModelConfig
from quarry.gateway.providers.local import LocalProvider
from quarry.gateway.registry import ProviderConfigError, build
from quarry.gateway.types import MaxTokensTooLarge, Message, StreamEnd
from tests.gateway.support import gateway, records

ASK = [{"role": "user", "content": "Name three colours."}]


async def test_generate_counts_tokens_exactly(local_model: LocalProvider) -> None:
    gw = gateway(local_model)
    done = await gw.generate("generation", ASK, max_tokens=16, temperature=0)
    assert done.text.strip()
    assert not done.usage.estimated
    # the prompt llama.cpp read is the GGUF's chat template around the messages, and quarry's
    # own count of it (the same template, the same tokenizer) agrees with llama.cpp's
    assert done.usage.input_tokens == local_model.count_tokens(
        [Message("user", "Name three colours.")]
    )
    assert done.usage.cost == 0.0  # local models are free, not unpriced


async def test_the_chat_template_comes_from_the_gguf(local_model: LocalProvider) -> None:
    llama = local_model._model()
    template = llama.metadata["tokenizer.chat_template"]
    assert "<|im_start|>" in template
    assert local_model.count_tokens([Message("user", "hi")]) > local_model.count_tokens("hi") + 2


async def test_temperature_zero_is_deterministic(local_model: LocalProvider) -> None:
    gw = gateway(local_model)
    first = await gw.generate("generation", ASK, max_tokens=12, temperature=0)
    second = await gw.generate("generation", ASK, max_tokens=12, temperature=0)
    assert first.text == second.text


async def test_stream_matches_generate(local_model: LocalProvider) -> None:
    gw = gateway(local_model)
    whole = await gw.generate("generation", ASK, max_tokens=12, temperature=0)
    items = [item async for item in gw.stream("generation", ASK, max_tokens=12, temperature=0)]
    end = items[-1]
    assert isinstance(end, StreamEnd)
    assert end.text == whole.text
    assert len(items) > 2


async def test_leaving_a_stream_stops_decoding_and_frees_the_model(
    local_model: LocalProvider,
) -> None:
    gw = gateway(local_model)
    stream = gw.stream("generation", ASK, max_tokens=40, temperature=0)
    first = await anext(stream)
    assert isinstance(first, str)
    await stream.aclose()
    [record] = await records(gw)
    assert record.outcome == "cancelled"
    assert record.output_tokens < 40
    # the model is free again at once
    assert (await gw.generate("generation", ASK, max_tokens=4, temperature=0)).text


LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]


async def test_calls_waiting_for_the_model_hold_no_thread_and_leave_at_once(
    local_model: LocalProvider,
) -> None:
    gw = gateway(local_model)
    decoding = asyncio.create_task(gw.generate("generation", LONG, max_tokens=300, temperature=0))
    await asyncio.sleep(0.1)
    # More waiting calls than asyncio's default executor has threads (at most 32).
    waiting = [
        asyncio.create_task(gw.generate("generation", ASK, max_tokens=4, temperature=0))
        for _ in range(40)
    ]
    await asyncio.sleep(0.1)
    # The loop's own threads are free for everything else (file reads, other models).
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2) == "free"
    waiting_stream = gw.stream("generation", ASK, max_tokens=4, temperature=0)
    with pytest.raises(TimeoutError):  # its turn has not come
        await asyncio.wait_for(anext(waiting_stream), 0.2)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await waiting_stream.aclose()
    assert not decoding.done()  # they left without waiting for the decode ahead of them
    assert (await decoding).text
    assert (await gw.generate("generation", ASK, max_tokens=4, temperature=0)).text


async def test_ready_loads_the_model_before_tokens_are_counted(
    local_model: LocalProvider,
) -> None:
    provider = LocalProvider("fresh", ModelConfig(provider="local"), local_model.path)
    gw = gateway(provider)
    assert provider._llama is None  # loaded on first use, not when configured
    await gw.ready("fresh")  # on a thread: counting, which is synchronous, then finds it loaded
    assert provider._llama is not None
    assert gw.count_tokens("fresh", "Name three colours.") > 0
    await provider.aclose()


async def test_json_schema_is_enforced_by_a_grammar(local_model: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["colour", "count"],
        "additionalProperties": False,
    }
    gw = gateway(local_model)
    done = await gw.generate_json(
        "generation",
        [{"role": "user", "content": "Pick a colour and a count."}],
        schema,
        max_tokens=40,
        temperature=0,
    )
    assert done.value["colour"] in {"red", "green", "blue"}
    assert 0 <= done.value["count"] <= 9
    assert set(done.value) == {"colour", "count"}


async def test_max_tokens_beyond_the_context(local_model: LocalProvider) -> None:
    gw = gateway(local_model)
    window = await local_model.context_window()
    assert window is not None
    with pytest.raises(MaxTokensTooLarge, match=f"holds {window} tokens"):
        await gw.generate("generation", ASK, max_tokens=window)


async def test_any_gguf_path_by_configuration(local_model: LocalProvider, tmp_path: Path) -> None:
    copy = tmp_path / "my-model.gguf"
    shutil.copyfile(local_model.path, copy)
    provider = build("mine", ModelConfig(provider="local", path=copy), env={})
    assert isinstance(provider, LocalProvider)
    assert provider.provider_model == "my-model"
    try:
        done = await gateway(provider).generate("generation", ASK, max_tokens=4, temperature=0)
        assert done.text
    finally:
        await provider.aclose()


def test_a_file_that_is_not_gguf_fails_at_start(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ProviderConfigError, match="not a GGUF file"):
        build("mine", ModelConfig(provider="local", path=bogus), env={})
    with pytest.raises(ProviderConfigError, match="cannot read"):
        build("mine", ModelConfig(provider="local", path=tmp_path / "absent.gguf"), env={})
