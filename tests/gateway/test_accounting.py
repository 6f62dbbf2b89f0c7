"""Usage records and the response cache in real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from quarry.gateway.accounting import PostgresUsageSink, UsageLog, usage_by_model_day
from quarry.gateway.cache import ResponseCache
from quarry.gateway.gateway import Gateway
from quarry.runtime import Runtime
from tests.gateway.support import USER, compatible_model, openai_model
from tests.gateway.wire import Script, openai_reply, openai_stream, status


def pg_gateway(runtime: Runtime, *providers, cache_ttl: float | None = None) -> Gateway:
    return Gateway(
        {p.name: p for p in providers},
        {"generation": [p.name for p in providers]},
        usage=UsageLog(PostgresUsageSink(runtime.db)),
        cache=ResponseCache(runtime.db, cache_ttl) if cache_ttl else None,
        backoff_base=0.01,
    )


async def test_every_attempt_is_recorded_with_who_and_what(runtime: Runtime) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    script = Script(status(500), openai_reply("hi", prompt_tokens=30, completion_tokens=10))
    gw = pg_gateway(runtime, openai_model(script))
    done = await gw.generate(
        "generation", USER, project_id=project, user_id=user, request_id="req-1"
    )
    await gw.flush()
    rows = await runtime.db.fetch_all("usage.for_request", request_id="req-1")
    assert [r["outcome"] for r in rows] == ["error", "ok"]
    ok = rows[1]
    assert ok["project_id"] == project
    assert ok["user_id"] == user
    assert (ok["role"], ok["operation"], ok["provider"], ok["model"]) == (
        "generation",
        "generate",
        "openai",
        "gpt",
    )
    assert ok["provider_model"] == "gpt-4o-mini"
    assert (ok["input_tokens"], ok["output_tokens"]) == (30, 10)
    assert float(ok["cost"]) == pytest.approx(done.usage.cost)
    assert ok["latency_ms"] > 0
    assert rows[0]["error"].startswith("HTTP 500")
    await gw.aclose()


async def test_usage_summary_by_model_and_day(runtime: Runtime) -> None:
    project = uuid.uuid4()
    priced = openai_model(Script(openai_reply("a", prompt_tokens=100, completion_tokens=50)))
    unpriced = compatible_model(Script(openai_stream(["b", "c"], usage=(7, 2))))
    gw = Gateway(
        {"gpt": priced, "vllm": unpriced},
        {"generation": ["gpt"], "analysis": ["vllm"]},
        usage=UsageLog(PostgresUsageSink(runtime.db)),
    )
    for _ in range(3):
        await gw.generate("generation", USER, project_id=project)
    [_ async for _ in gw.stream("analysis", USER, project_id=project)]
    await gw.generate("generation", USER, project_id=uuid.uuid4())  # another project
    await gw.flush()
    since = datetime.now(UTC) - timedelta(days=1)
    rows = {
        r.model: r for r in await usage_by_model_day(runtime.db, project_id=project, since=since)
    }
    assert set(rows) == {"gpt", "vllm"}
    assert (rows["gpt"].calls, rows["gpt"].input_tokens, rows["gpt"].output_tokens) == (3, 300, 150)
    assert rows["gpt"].cost == pytest.approx(3 * (100 * 0.15 + 50 * 0.6) / 1e6)
    assert rows["vllm"].cost is None
    assert rows["vllm"].unpriced == 1
    assert rows["gpt"].day == datetime.now(UTC).date()
    everyone = await usage_by_model_day(runtime.db, project_id=None, since=since)
    assert sum(r.calls for r in everyone) == 5
    await gw.aclose()


async def test_usage_queries_read_an_index(runtime: Runtime) -> None:
    async with runtime.db.pool.connection() as conn:
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute(
            "EXPLAIN " + runtime.db.queries["usage.by_model_day"],
            {"project_id": uuid.uuid4(), "since": datetime.now(UTC)},
        )
        plan = "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())
    assert "model_usage_project_time" in plan


async def test_temperature_zero_answers_are_cached_and_cost_nothing(runtime: Runtime) -> None:
    script = Script(openai_reply("cached answer", prompt_tokens=40, completion_tokens=8))
    gw = pg_gateway(runtime, openai_model(script), cache_ttl=3600)
    first = await gw.generate("generation", USER, temperature=0, request_id="c1")
    second = await gw.generate("generation", USER, temperature=0, request_id="c2")
    assert second.text == first.text == "cached answer"
    assert len(script.requests) == 1
    assert second.usage.cached
    assert second.usage.cost == 0.0
    assert (second.usage.input_tokens, second.usage.output_tokens) == (40, 8)
    await gw.flush()
    [hit] = await runtime.db.fetch_all("usage.for_request", request_id="c2")
    assert hit["outcome"] == "cached"
    assert float(hit["cost"]) == 0.0
    # a different parameter, or a temperature above zero, is a miss
    await gw.generate("generation", USER, temperature=0, max_tokens=7)
    await gw.generate("generation", USER, temperature=0.7)
    await gw.generate("generation", USER, temperature=0.7)
    assert len(script.requests) == 4
    await gw.aclose()


async def test_the_cache_is_scoped_by_project(runtime: Runtime) -> None:
    script = Script(openai_reply("x"))
    gw = pg_gateway(runtime, openai_model(script), cache_ttl=3600)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    await gw.generate("generation", USER, temperature=0, project_id=mine)
    await gw.generate("generation", USER, temperature=0, project_id=mine)
    assert len(script.requests) == 1
    await gw.generate("generation", USER, temperature=0, project_id=theirs)
    assert len(script.requests) == 2
    await gw.aclose()


async def test_structured_output_is_cached_only_once_valid(runtime: Runtime) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    script = Script(openai_reply('{"n": "x"}'), openai_reply('{"n": 1}'))
    gw = pg_gateway(runtime, openai_model(script), cache_ttl=3600)
    first = await gw.generate_json("generation", USER, schema, temperature=0)
    assert first.repaired
    again = await gw.generate_json("generation", USER, schema, temperature=0)
    assert again.value == {"n": 1}
    assert len(script.requests) == 3  # the invalid first answer was not cached; the repair was
    await gw.aclose()


async def test_cached_answers_expire(runtime: Runtime) -> None:
    script = Script(openai_reply("x"))
    gw = pg_gateway(runtime, openai_model(script), cache_ttl=0.2)
    await gw.generate("generation", USER, temperature=0)
    await gw.generate("generation", USER, temperature=0)
    assert len(script.requests) == 1
    await asyncio.sleep(0.3)
    await gw.generate("generation", USER, temperature=0)
    assert len(script.requests) == 2
    await gw.aclose()


async def test_the_runtime_gateway_runs_every_role_offline(runtime: Runtime) -> None:
    gw = runtime.gateway
    assert set(gw.roles) >= {"generation", "analysis", "maintenance", "embedding", "rerank"}
    assert [p.config.provider for p in gw.chain("generation")] == ["local"]
    assert [p.config.provider for p in gw.chain("embedding")] == ["sentence_transformers"]


async def test_project_usage_over_the_api(client, runtime: Runtime, admin) -> None:
    from tests.conftest import bearer

    headers = bearer(admin.api_key.secret)
    made = await client.post("/projects", json={"name": "spend"}, headers=headers)
    project = made.json()["id"]
    script = Script(openai_reply("a", prompt_tokens=100, completion_tokens=50))
    gw = pg_gateway(runtime, openai_model(script))
    await gw.generate("generation", USER, project_id=uuid.UUID(project))
    await gw.generate("generation", USER, project_id=uuid.UUID(project))
    await gw.flush()
    answer = await client.get("/projects/spend/usage", headers=headers)
    assert answer.status_code == 200, answer.text
    [day] = answer.json()["days"]
    assert (day["model"], day["calls"], day["input_tokens"]) == ("gpt", 2, 200)
    assert day["cost"] == pytest.approx(2 * (100 * 0.15 + 50 * 0.6) / 1e6)
    bad = await client.get("/projects/spend/usage?days=0", headers=headers)
    assert bad.status_code == 422
    missing = await client.get("/projects/nope/usage", headers=headers)
    assert missing.json()["code"] == "project_not_found"
    await gw.aclose()


def test_prices_never_make_up_a_zero() -> None:
    from quarry.gateway.accounting import price_of
    from quarry.gateway.config import ModelConfig

    half = ModelConfig(provider="openai_compatible", price_input=1.0)
    assert price_of(half, "my-model") is None  # the output side is unknown
    table = ModelConfig(provider="openai", price_input=1.0)
    assert price_of(table, "gpt-4o-mini") == price_of(table, "gpt-4o-mini")
    mixed = price_of(table, "gpt-4o-mini")
    assert mixed is not None
    assert (mixed.input, mixed.output) == (1.0, 0.60)  # the table gives the other side
    assert price_of(ModelConfig(provider="local"), "SmolLM2") is not None


async def test_a_row_postgres_refuses_does_not_block_the_rest(runtime: Runtime) -> None:
    from dataclasses import replace

    from quarry.gateway.accounting import UsageRecord

    good = UsageRecord(
        request_id="r",
        project_id=None,
        user_id=None,
        role="generation",
        operation="generate",
        provider="openai",
        model="gpt",
        provider_model="gpt-4o-mini",
        input_tokens=1,
        output_tokens=1,
        tokens_estimated=False,
        cost=0.0,
        latency_ms=1.0,
        ttft_ms=None,
        outcome="ok",
    )
    bad = replace(good, request_id="bad\x00id")
    log = UsageLog(PostgresUsageSink(runtime.db))
    log.record(good)
    log.record(bad)
    log.record(replace(good, request_id="r2"))
    await log.aclose()
    rows = await runtime.db.fetch_all("usage.for_request", request_id="r")
    rows += await runtime.db.fetch_all("usage.for_request", request_id="r2")
    assert len(rows) == 2
