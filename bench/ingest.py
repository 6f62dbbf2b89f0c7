"""Ingestion throughput against the model's own floor.

Ingests a BEIR corpus (default: ../shared/datasets/scifact/corpus.jsonl, 5,183 abstracts) end
to end into a fresh project on a fresh embedded Postgres: submission, one job per document,
parsing, splitting, embedding, the transactional write of chunks, vectors and lexical
statistics. In the same run and with the same loaded model, the bare model encodes exactly
the chunk texts the pipeline produces (the loaded model's ``encode``, with the same passes by
length as the pipeline's), once before the pipeline and once after, in two ways: one
call with all of torch's threads, and the sorted texts in blocks shared by one thread per core
with one torch thread each (the shape of the pipeline's model threads). The reference is the
faster of the two means, so drift in the machine's speed during the run cancels out and the
pipeline is never measured against a slower way to run the model than the best known. The
model is the floor cost; the ratio of pipeline to bare-encode throughput says how close to
free the rest is.

    .venv/bin/python bench/ingest.py [--limit N] [--json bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import queue
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import torch

from quarry.ingest.documents import Intake, text_source
from quarry.ingest.embedders import LocalEmbedder, keeps_token_vectors, set_torch_threads
from quarry.ingest.factory import build_embedder, build_splitter, load_local_model
from quarry.ingest.parsers import Parsed
from quarry.logs import configure_logging
from quarry.runtime import Runtime, open_runtime
from quarry.settings import Settings
from quarry.tenancy.models import Principal

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/corpus.jsonl"
TARGET_RATIO = 0.85


def load_corpus(path: Path, limit: int | None) -> list[dict[str, str]]:
    documents = []
    with path.open() as fh:
        for line in fh:
            documents.append(json.loads(line))
            if limit and len(documents) >= limit:
                break
    return documents


async def sample_queries(db, counts: Counter[str], stop: asyncio.Event) -> None:
    """Diagnostic: what Postgres is busy with, sampled from pg_stat_activity every 20 ms."""
    async with db.pool.connection() as conn:
        await conn.set_autocommit(True)
        while not stop.is_set():
            rows = await (
                await conn.execute(
                    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q,"
                    " coalesce(wait_event_type, 'CPU') AS w FROM pg_stat_activity"
                    " WHERE state = 'active' AND pid <> pg_backend_pid()"
                )
            ).fetchall()
            for row in rows:
                counts[f"{row['w']:>8} {row['q']}"] += 1
            await asyncio.sleep(0.02)


async def run_pipeline(
    settings: Settings,
    model,
    corpus: list[dict[str, str]],
    submit_first: bool,
    one_by_one: bool = False,
    samples: Counter[str] | None = None,
) -> dict:
    # As the service makes it (token vectors kept for late interaction, the default).
    embedder = build_embedder(settings, model)
    assert isinstance(embedder, LocalEmbedder)
    async with open_runtime(settings, embedder=embedder) as rt:
        project_id = await new_project(rt, settings)
        start_worker = lambda: asyncio.create_task(  # noqa: E731
            rt.run_worker(install_signal_handlers=False)
        )
        worker = None if submit_first else start_worker()
        stop_sampling = asyncio.Event()
        sampler = (
            asyncio.create_task(sample_queries(rt.db, samples, stop_sampling))
            if samples is not None
            else None
        )
        started = time.perf_counter()
        cpu_before = cpu_breakdown()
        await submit_documents(rt, project_id, corpus, one_by_one)
        submitted = time.perf_counter() - started
        if worker is None:
            worker = start_worker()
            started = time.perf_counter()
            cpu_before = cpu_breakdown()
        counts = await rt.documents.wait_settled(project_id, poll=0.25)
        by_status = counts.documents_by_status
        elapsed = time.perf_counter() - started
        cpu = {k: round(v - cpu_before[k], 2) for k, v in cpu_breakdown().items()}
        stop_sampling.set()
        if sampler is not None:
            await sampler
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        async with rt.db.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT indexed_text(context, text) AS text FROM chunks"
                    " WHERE project_id = %s ORDER BY id",
                    (project_id,),
                )
            ).fetchall()
        await embedder.aclose()
    return {
        "token_vectors_kept": keeps_token_vectors(embedder),
        "model_busy_seconds": round(embedder.busy_seconds, 2),
        "write_transactions": rt.pipeline.writer.transactions if rt.pipeline else None,
        "cpu_seconds": cpu,
        "encode_calls": embedder.calls,
        "documents": len(corpus),
        "complete": by_status["complete"],
        "failed": by_status["failed"],
        "chunks": counts.chunk_count,
        "submit_seconds": round(submitted, 2),
        "seconds": round(elapsed, 2),
        "texts": [row["text"] for row in rows],
    }


async def new_project(rt: Runtime, settings: Settings) -> uuid.UUID:
    """A fresh project owned by a first admin, on a runtime without one."""
    admin = await rt.users.bootstrap_admin(settings.data_dir / "admin.key")
    assert admin is not None
    me = Principal(admin.user.id, admin.user.name, is_admin=True)
    return (await rt.projects.create(me, "bench")).id


async def submit_documents(
    rt: Runtime, project_id: uuid.UUID, documents: list[dict[str, str]], one_by_one: bool
) -> None:
    """Submit BEIR documents as plain text with their titles: in batches, as `quarry ingest`,
    a multipart upload of many files and the BEIR loader do, or one by one, as a client of
    POST /documents/text would."""
    intake = Intake(rt.documents, project_id)
    for doc in documents:
        source = text_source(
            document_text(doc),
            external_id=doc["_id"],
            title=doc.get("title", ""),
            fmt="txt",
            metadata={},
            tags=(),
        )
        if one_by_one:
            await rt.documents.submit(project_id, source)
        else:
            await intake.add(doc["_id"], source)
    await intake.finish()
    if intake.refused:
        raise intake.refused[0][1]


def cpu_breakdown() -> dict[str, float]:
    """CPU seconds so far: this process's model threads, its other Python threads, and Postgres.

    The model's work is the process's whole time less its Python threads' other than the
    embedder's lanes (``embed*``): torch's own compute threads are unnamed natives, and lanes
    that have ended (an embedder closed earlier) still count."""
    me = psutil.Process()
    own = me.cpu_times()
    others = {t.native_id for t in threading.enumerate() if not t.name.startswith("embed")}
    other = sum(t.user_time + t.system_time for t in me.threads() if t.id in others)
    return {
        "model_threads": own.user + own.system - other,
        "other_python": other,
        "postgres": postgres_cpu_seconds(),
    }


def postgres_cpu_seconds() -> float:
    """CPU seconds so far of every Postgres process on the machine (the embedded server's)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def chunk_texts(settings: Settings, model, corpus: list[dict[str, str]]) -> list[str]:
    """What the model reads of each chunk the pipeline will make (context included), from the
    same splitter on the same text and title."""
    splitter = build_splitter(settings, LocalEmbedder(model))
    texts: list[str] = []
    for doc in corpus:
        chunks = splitter.split(Parsed(document_text(doc)), doc.get("title", ""))
        texts.extend(chunk.indexed_text for chunk in chunks)
    return texts


def document_text(doc: dict[str, str]) -> str:
    return f"{doc.get('title', '')}\n\n{doc['text']}".strip()


def run_bare(model, texts: list[str]) -> float:
    """One ``encode`` call over every text, with all of torch's threads."""
    model.encode(texts[:64])  # warm up, as the pipeline's first batch did
    started = time.perf_counter()
    model.encode(texts)
    return time.perf_counter() - started


def run_bare_threads(model, texts: list[str], workers: int) -> float:
    """The same texts sorted by length, longest first, in blocks of 64 shared by
    ``workers`` threads of one torch thread each: the shape the pipeline's model threads
    have, with none of the pipeline around it."""
    ordered = sorted(texts, key=len, reverse=True)
    blocks = queue.SimpleQueue()
    for start in range(0, len(ordered), 64):
        blocks.put(ordered[start : start + 64])
    default = torch.get_num_threads()

    def work() -> None:
        set_torch_threads(1)
        while True:
            try:
                block = blocks.get_nowait()
            except queue.Empty:
                return
            model.encode(block)

    model.encode(texts[:64])
    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    torch.set_num_threads(default)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--concurrency", type=int, default=None, help="worker concurrency")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--submit-first",
        action="store_true",
        help="diagnostic: submit everything before the worker starts, and time only indexing",
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="diagnostic: submit each document on its own instead of in batches",
    )
    parser.add_argument(
        "--sample-queries",
        action="store_true",
        help="diagnostic: sample pg_stat_activity and print what Postgres was busy with",
    )
    args = parser.parse_args()
    samples: Counter[str] | None = Counter() if args.sample_queries else None

    corpus = load_corpus(args.corpus, args.limit)
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        overrides = {"data_dir": Path(tmp), "log_level": "warning", "bootstrap_admin": False}
        if args.concurrency:
            overrides["worker_concurrency"] = args.concurrency
        settings = Settings(**overrides)
        configure_logging(settings)
        model = load_local_model(settings)
        expected = chunk_texts(settings, model, corpus)
        workers = settings.local_embedding_workers or torch.get_num_threads()
        one_call = [run_bare(model, expected)]
        threads = [run_bare_threads(model, expected, workers)]
        pipeline = asyncio.run(
            run_pipeline(settings, model, corpus, args.submit_first, args.one_by_one, samples)
        )
        threads.append(run_bare_threads(model, expected, workers))
        one_call.append(run_bare(model, expected))
    texts = pipeline.pop("texts")
    if sorted(texts) != sorted(expected):
        raise SystemExit("the pipeline's chunks differ from the splitter's: not comparable")
    # The floor is the faster way to run the bare model: the ratio is against that one.
    bare_seconds = min(sum(one_call) / 2, sum(threads) / 2)
    chunks = len(texts)
    result = {
        "corpus": str(args.corpus.name),
        "model": model.model_id,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "worker_concurrency": settings.worker_concurrency,
        "model_batch_size": model.batch_size,
        "model_precision": model.precision,
        "precision_calibration": model.calibration,
        "timed": "indexing only (submitted first)" if args.submit_first else "end to end",
        "submitted": "one by one" if args.one_by_one else "in batches",
        **pipeline,
        "documents_per_second": round(pipeline["documents"] / pipeline["seconds"], 2),
        "chunks_per_second": round(chunks / pipeline["seconds"], 2),
        "model_threads": workers,
        "bare_encode_seconds": round(bare_seconds, 2),
        "bare_encode_one_call_runs": [round(x, 2) for x in one_call],
        "bare_encode_threads_runs": [round(x, 2) for x in threads],
        "bare_chunks_per_second": round(chunks / bare_seconds, 2),
        "pipeline_over_bare": round(bare_seconds / pipeline["seconds"], 3),
        "target": TARGET_RATIO,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    for key, value in result.items():
        print(f"{key:24} {value}")
    verdict = "meets" if result["pipeline_over_bare"] >= TARGET_RATIO else "misses"
    print(
        f"pipeline reaches {result['pipeline_over_bare']:.1%} of bare encode: {verdict} "
        f"the {TARGET_RATIO:.0%} target"
    )
    if samples is not None:
        print("\nPostgres activity samples (20 ms apart), most frequent first:")
        for query, n in samples.most_common(20):
            print(f"{n:7} {query}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
