"""What document summaries cost: indexing a slice of SciFact, then summarising each document
with the bundled SmolLM2 (role maintenance), in the same run.

Prints documents/s for indexing (parse, split, embed, write) and for summarising, seconds per
summary, and the ratio: how many times longer ingestion takes with summaries on. The
reference is indexing itself, measured in the same run on the same documents. From the
ratio, the time summaries would add to all 5,183 SciFact documents on this machine: the
reason ``document_summaries`` is off by default.

    .venv/bin/python bench/summaries.py [--documents 40] [--json bench/results/summaries.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from quarry.answers.summaries import summarise_document
from quarry.ingest.documents import text_source
from quarry.logs import configure_logging
from quarry.runtime import background_worker, open_runtime
from quarry.search.beir import document_text
from quarry.search.evaluate import BeirDataset, percentile
from quarry.settings import Settings

SCIFACT = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"
CORPUS_SIZE = 5183


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = BeirDataset.load(SCIFACT, "test")
    items = [item for _, item in zip(range(args.documents), dataset.corpus(), strict=False)]
    with tempfile.TemporaryDirectory(prefix="quarry-bench-sum-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, log_level="warning")
        configure_logging(settings)
        async with open_runtime(settings, load_models=True) as rt:
            me = await rt.keys.authenticate_key((data_dir / "admin.key").read_text().strip())
            project = await rt.projects.create(me, "bench-summaries")
            started = time.perf_counter()
            ids = []
            for item in items:
                submitted = await rt.documents.submit(
                    project.id,
                    text_source(
                        document_text(item),
                        external_id=str(item["_id"]),
                        title=str(item.get("title") or ""),
                        fmt="txt",
                        metadata={},
                        tags=(),
                    ),
                )
                ids.append(submitted.document.id)
            async with background_worker(rt, "bench"):
                await rt.documents.wait_settled(project.id, poll=0.05)
            index_s = time.perf_counter() - started
            seconds, tokens = [], []
            hello = [{"role": "user", "content": "Hello"}]
            await rt.gateway.generate("maintenance", hello, max_tokens=1)  # load the model
            for document_id in ids:
                t = time.perf_counter()
                assert await summarise_document(rt.db, rt.gateway, project.id, document_id)
                seconds.append(time.perf_counter() - t)
                row = await rt.db.fetch_one(
                    "documents.get", project_id=project.id, document_id=document_id
                )
                assert row is not None
                tokens.append(rt.gateway.count_tokens("local", row["summary"]))
            summary_s = sum(seconds)
    n = len(ids)
    ratio = (index_s + summary_s) / index_s
    result = {
        "documents": n,
        "cores": os.cpu_count(),
        "index_docs_per_s": round(n / index_s, 2),
        "summary_docs_per_s": round(n / summary_s, 3),
        "summary_s_p50": round(percentile(seconds, 50), 3),
        "summary_s_p95": round(percentile(seconds, 95), 3),
        "summary_tokens_mean": round(statistics.fmean(tokens), 1),
        "ingest_time_with_summaries_x": round(ratio, 1),
        "scifact_summaries_hours": round(CORPUS_SIZE * summary_s / n / 3600, 2),
    }
    print(
        f"SciFact, first {n} documents, bundled models, {os.cpu_count()} cores\n"
        f"indexing (reference): {result['index_docs_per_s']} documents/s\n"
        f"summaries (SmolLM2):  {result['summary_docs_per_s']} documents/s, "
        f"{result['summary_s_p50']} s p50 / {result['summary_s_p95']} s p95 per document, "
        f"{result['summary_tokens_mean']} tokens each\n"
        f"ingestion with summaries takes {ratio:.1f}x as long; all {CORPUS_SIZE} SciFact "
        f"documents would need {result['scifact_summaries_hours']} h of summarising"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
