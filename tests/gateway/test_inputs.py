"""Bad input to the gateway: each is a 422-class error with a stable code, before any call."""

from __future__ import annotations

import pytest

from quarry.gateway.types import (
    InvalidMessages,
    InvalidParameter,
    InvalidSchema,
    MaxTokensTooLarge,
    UnknownModel,
    UnknownRole,
)
from tests.gateway.support import USER, gateway, openai_model, records
from tests.gateway.wire import Script, openai_reply


@pytest.fixture
def script() -> Script:
    return Script(openai_reply("ok"))


async def test_unknown_role(script: Script) -> None:
    gw = gateway(openai_model(script))
    with pytest.raises(UnknownRole, match=r"'summarise'.*configured roles: generation") as caught:
        await gw.generate("summarise", USER)
    assert caught.value.status == 422
    with pytest.raises(UnknownRole):
        [item async for item in gw.stream("nope", USER)]
    with pytest.raises(UnknownRole):
        await gw.embed("nope", ["x"])
    assert script.requests == []


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "must not be empty"),
        ("hello", "must be a list"),
        (None, "must be a list"),
        ([{"role": "user"}], r"messages\[0\].content must be a string"),
        ([{"role": "robot", "content": "x"}], r"messages\[0\].role must be one of"),
        ([{"content": "x"}], r"messages\[0\].role"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "user", "content": "x", "name": "bob"}], "unknown field 'name'"),
        ([{"role": "user", "content": "ok"}, ["user", "x"]], r"messages\[1\] must be an object"),
    ],
)
async def test_messages_in_a_wrong_shape(script: Script, messages, problem: str) -> None:
    gw = gateway(openai_model(script))
    with pytest.raises(InvalidMessages, match=problem) as caught:
        await gw.generate("generation", messages)
    assert caught.value.code == "invalid_messages"
    assert script.requests == []
    assert await records(gw) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"minLength": -1}}}, "properties/a/minLength"),
        ({"type": "object", "required": "a"}, "not a valid JSON Schema"),
        ({"type": "object", "default": {1, 2}}, "not JSON"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_schema_that_is_not_json_schema(script: Script, schema, problem: str) -> None:
    gw = gateway(openai_model(script))
    with pytest.raises(InvalidSchema, match=problem) as caught:
        await gw.generate_json("generation", USER, schema)
    assert caught.value.status == 422
    assert script.requests == []


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": [""]}, "stop"),
        ({"seed": 1.5}, "seed"),
        ({"top_k": 3}, "unknown parameter 'top_k'"),
    ],
)
async def test_bad_parameters(script: Script, params, problem: str) -> None:
    gw = gateway(openai_model(script))
    with pytest.raises(InvalidParameter, match=problem):
        await gw.generate("generation", USER, **params)
    assert script.requests == []


async def test_max_tokens_beyond_the_context(script: Script) -> None:
    gw = gateway(openai_model(script, context_window=1000))
    with pytest.raises(MaxTokensTooLarge, match="gpt holds 1000 tokens") as caught:
        await gw.generate("generation", USER, max_tokens=5000)
    assert caught.value.code == "max_tokens_too_large"
    assert script.requests == []
    # within the window, it is served
    assert (await gw.generate("generation", USER, max_tokens=500)).text == "ok"


async def test_a_model_too_small_is_skipped_for_a_bigger_one_in_the_chain() -> None:
    small, big = Script(openai_reply("small")), Script(openai_reply("big"))
    gw = gateway(
        openai_model(small, name="small", context_window=256),
        openai_model(big, name="big", context_window=100_000),
    )
    assert (await gw.generate("generation", USER, max_tokens=4000)).text == "big"
    assert small.requests == []


def test_count_tokens_of_an_unknown_model(script: Script) -> None:
    gw = gateway(openai_model(script))
    with pytest.raises(UnknownModel):
        gw.count_tokens("gpt-9", "hello")
    assert gw.count_tokens("gpt", "hello world, hello") > gw.count_tokens("gpt", "hello")
    assert gw.count_tokens("gpt", USER) > gw.count_tokens("gpt", USER[0]["content"])


def test_roles_must_name_configured_models(script: Script) -> None:
    with pytest.raises(UnknownModel, match="'ghost'"):
        gateway(openai_model(script), roles={"generation": ["gpt", "ghost"]})
