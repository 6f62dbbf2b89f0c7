"""Search latency while the worker in the same process indexes, by the indexing threads' niceness.

`quarry serve` on the embedded database runs its worker in the API's process, so a search can
arrive while the model's indexing threads keep every core busy. This runs that case as the
service does (one runtime, its worker inside, a hybrid search every 0.3 s as one client) on
SciFact: per round, a fresh embedded Postgres and project, the first documents indexed, then
searches on the idle project (the reference, in the same round), then searches while the next
documents are submitted and indexed. Rounds alternate between the configured
``QUARRY_INDEX_NICENESS`` (default 10) and 0 (the indexing threads at the process's priority),
each with lanes of its own on the same loaded model, so the machine's drift is shared.

It prints, per round and as medians per niceness: the searches' p50/p95/max under indexing
and their ratio to the idle p50, the share of their time spent waiting for a pooled
connection (the API and the worker share one pool), and the indexing throughput.

    .venv/bin/python bench/search_while_indexing.py [--rounds 4]
        [--json bench/results/search_while_indexing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from ingest import DEFAULT_CORPUS, cpu_breakdown, load_corpus, new_project, submit_documents

from quarry.ingest.factory import build_embedder, load_local_model
from quarry.logs import configure_logging
from quarry.runtime import Runtime, freeze_startup_heap, open_runtime
from quarry.search.models import SearchRequest
from quarry.settings import Settings

SEARCH_EVERY_S = 0.3
IDLE_SEARCHES = 40

_in_search: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "in_search", default=None
)


def time_pool_waits(pool: Any) -> None:
    """Diagnostic: add the time each search spends waiting for a pooled connection to the list
    its context carries (the worker's checkouts carry none)."""
    getconn: Callable[..., Any] = pool.getconn

    async def timed(*args: Any, **kwargs: Any) -> Any:
        waits = _in_search.get()
        started = time.perf_counter()
        try:
            return await getconn(*args, **kwargs)
        finally:
            if waits is not None:
                waits[0] += time.perf_counter() - started

    pool.getconn = timed


def cpu_now() -> dict[str, float]:
    """ingest.py's CPU breakdown, and the machine's idle time."""
    return {**cpu_breakdown(), "idle": psutil.cpu_times().idle}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


async def timed_search(rt: Runtime, project_id: Any, query: str) -> tuple[float, float]:
    """One hybrid search as the API runs it: milliseconds in all, and waiting for the pool."""
    waits = [0.0]
    token = _in_search.set(waits)
    started = time.perf_counter()
    try:
        await rt.search.search(project_id, SearchRequest(query=query))
    finally:
        _in_search.reset(token)
    return (time.perf_counter() - started) * 1000, waits[0] * 1000


async def one_round(
    settings: Settings, model: Any, corpus: list[dict[str, str]], base: int, queries: list[str]
) -> dict[str, Any]:
    embedder = build_embedder(settings, model)
    async with open_runtime(settings, embedder=embedder) as rt:
        freeze_startup_heap()  # as `quarry serve` does once it is ready
        time_pool_waits(rt.db.pool)
        project_id = await new_project(rt, settings)
        worker = asyncio.create_task(rt.run_worker(install_signal_handlers=False))
        await submit_documents(rt, project_id, corpus[:base], one_by_one=True)
        await rt.documents.wait_settled(project_id, poll=0.25)
        for query in queries[:10]:  # warm: plans, caches
            await timed_search(rt, project_id, query)
        idle = [
            (await timed_search(rt, project_id, q))[0] for q in queries[10 : 10 + IDLE_SEARCHES]
        ]

        loaded: list[tuple[float, float]] = []
        indexing_done = asyncio.Event()

        async def searcher() -> None:
            i = 10 + IDLE_SEARCHES
            while not indexing_done.is_set():
                await asyncio.sleep(SEARCH_EVERY_S)
                loaded.append(await timed_search(rt, project_id, queries[i % len(queries)]))
                i += 1

        started = time.perf_counter()
        cpu_before = cpu_now()
        searches = asyncio.create_task(searcher())
        await submit_documents(rt, project_id, corpus[base:], one_by_one=True)
        counts = await rt.documents.wait_settled(project_id, poll=0.25)
        seconds = time.perf_counter() - started
        cpu = {k: round(v - cpu_before[k], 1) for k, v in cpu_now().items()}
        indexing_done.set()
        await searches
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    await embedder.aclose()  # this round's lanes; the next round makes its own
    complete = counts.documents_by_status["complete"]
    if complete != len(corpus):
        raise SystemExit(f"{len(corpus) - complete} documents did not complete")
    latencies = [ms for ms, _ in loaded]
    idle_p50 = statistics.median(idle)
    p50, p95 = quantile(latencies, 0.5), quantile(latencies, 0.95)
    return {
        "index_niceness": settings.index_niceness,
        "idle_p50_ms": round(idle_p50, 1),
        "searches": len(latencies),
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(max(latencies), 1),
        "p50_over_idle": round(p50 / idle_p50, 2),
        "p95_over_idle": round(p95 / idle_p50, 2),
        "pool_wait_share": round(sum(w for _, w in loaded) / sum(latencies), 3),
        "pool_wait_max_ms": round(max(w for _, w in loaded), 1),
        "indexed_documents": len(corpus) - base,
        "indexing_seconds": round(seconds, 1),
        "documents_per_s": round((len(corpus) - base) / seconds, 1),
        "cpu_seconds": cpu,
    }


def summary(rounds: list[dict[str, Any]], niceness: int) -> dict[str, float]:
    mine = [r for r in rounds if r["index_niceness"] == niceness]
    keys = ("p50_ms", "p95_ms", "max_ms", "p50_over_idle", "p95_over_idle", "documents_per_s")
    return {key: round(statistics.median(r[key] for r in mine), 2) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--base", type=int, default=300, help="documents indexed before")
    parser.add_argument("--documents", type=int, default=1200, help="documents indexed during")
    parser.add_argument("--rounds", type=int, default=4, help="alternating, configured first")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    corpus = load_corpus(args.corpus, args.base + args.documents)
    with (args.corpus.parent / "queries.jsonl").open() as fh:
        queries = [json.loads(line)["text"] for line in fh]
    configured = Settings(log_level="warning").index_niceness
    if configured == 0:
        raise SystemExit("QUARRY_INDEX_NICENESS is 0: nothing to compare against 0")
    model = load_local_model(Settings(log_level="warning"))
    rounds = []
    for i in range(args.rounds):
        niceness = configured if i % 2 == 0 else 0
        with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                log_level="warning",
                bootstrap_admin=False,
                index_niceness=niceness,
            )
            configure_logging(settings)
            result = asyncio.run(one_round(settings, model, corpus, args.base, queries))
        print(json.dumps(result), flush=True)
        rounds.append(result)
    nicer, equal = summary(rounds, configured), summary(rounds, 0)
    print(f"\nmedians over rounds ({args.documents} documents indexed during the searches)")
    print(
        f"{'niceness':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p50/idle':>9} "
        f"{'p95/idle':>9} {'docs/s':>7}"
    )
    for niceness, row in ((configured, nicer), (0, equal)):
        print(
            f"{niceness:>8} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} "
            f"{row['p50_over_idle']:>9} {row['p95_over_idle']:>9} {row['documents_per_s']:>7}"
        )
    ratios = {
        "p50": round(nicer["p50_ms"] / equal["p50_ms"], 2),
        "p95": round(nicer["p95_ms"] / equal["p95_ms"], 2),
        "documents_per_s": round(nicer["documents_per_s"] / equal["documents_per_s"], 2),
    }
    print(
        f"niceness {configured} against 0: p50 x{ratios['p50']}, p95 x{ratios['p95']}, "
        f"indexing throughput x{ratios['documents_per_s']}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "base_documents": args.base,
                    "documents": args.documents,
                    "search_every_s": SEARCH_EVERY_S,
                    "rounds": rounds,
                    "medians": {str(configured): nicer, "0": equal},
                    f"niceness_{configured}_over_0": ratios,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
