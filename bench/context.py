"""The context builder against naive top-k concatenation, on SciFact's test queries.

For every test query, hybrid search returns the top ``--k`` chunks; the same hits go to the
naive baseline (chunks in rank order, each a numbered passage, until the next does not fit) and
to the builder (near-duplicates out, touching chunks merged, at most two passages a document,
coverage-first selection), at the same evidence budget, both counted with the bundled SmolLM2's
tokenizer (the model that would read them). Figures per budget, averaged over queries:

- evidence recall: the share of the query's gold documents present in the context;
- tokens used, passages, and passages the builder dropped (by reason).

Last, ``ask`` with the bundled SmolLM2 on the first ``--ask`` test questions: time to first
token (search, context, then the answer streamed) and end-to-end latency.

Then, for each naive budget, the smallest builder budget (in steps of 32 tokens) whose evidence
recall is at least the naive one, and the tokens it uses: the saving at equal recall.

    .venv/bin/python bench/context.py [--data-dir D --project P] [--json bench/results/context.json]

Without ``--project`` it loads SciFact into a fresh project first (about 12 minutes); with
``--data-dir``/``--project`` it reuses one loaded by ``quarry eval beir``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from quarry.answers.context import Budget, Context, ContextBuilder, naive_context
from quarry.answers.models import AskRequest
from quarry.logs import configure_logging
from quarry.runtime import Runtime, background_worker, open_runtime
from quarry.search.beir import load_corpus
from quarry.search.evaluate import BeirDataset, percentile
from quarry.search.models import Hit, SearchRequest
from quarry.settings import Settings
from quarry.tenancy.models import Principal

SCIFACT = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"
TARGET_SAVING = 0.30
STEP = 32


def recall(context: Context, hits: list[Hit], gold: set[str]) -> float:
    external = {h.document_id: h.external_id for h in hits}
    present = {external[p.document_id] for p in context.passages}
    return len(present & gold) / len(gold)


async def project_id(
    rt: Runtime, me: Principal, name: str | None, dataset: BeirDataset
) -> uuid.UUID:
    if name is not None:
        return (await rt.projects.resolve(me, name)).id
    created = await rt.projects.create(me, f"bench-context-{int(time.time())}")
    async with background_worker(rt, "bench"):
        await load_corpus(rt, created.id, dataset)
    return created.id


async def ask_latency(rt: Runtime, pid: uuid.UUID, questions: list[str]) -> dict[str, float]:
    """``ask`` as a streamed answer will run it: search and context (``Answers.prepare``), then
    the answer streamed from the generation role; timed to the first token and to the last.
    Each question once: a second pass would find its prompt in llama.cpp's cache."""
    if not questions:
        return {}
    ttft, e2e, tokens = [], [], []
    for question in questions:
        started = time.perf_counter()
        prepared = await rt.answers.prepare(pid, AskRequest(question=question))
        first = None
        async for item in rt.gateway.stream(
            "generation",
            prepared.messages,
            max_tokens=prepared.context.budget.answer_reserve,
            temperature=0,
        ):
            if isinstance(item, str):
                first = first or time.perf_counter()
            else:
                tokens.append(item.usage.output_tokens)
        done = time.perf_counter()
        assert first is not None
        ttft.append((first - started) * 1000)
        e2e.append((done - started) * 1000)
    return {
        "questions": len(questions),
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p95_ms": percentile(ttft, 95),
        "e2e_p50_ms": percentile(e2e, 50),
        "e2e_p95_ms": percentile(e2e, 95),
        "output_tokens_mean": statistics.fmean(tokens) if tokens else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--project")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--split", default="test", help="train to tune, test to report")
    parser.add_argument("--budgets", default="256,512,1024,2048")
    parser.add_argument("--max-per-document", type=int, default=2)
    parser.add_argument(
        "--passage-tokens", type=int, default=128, help="the focused builder's passage cap"
    )
    parser.add_argument(
        "--ask", type=int, default=20, help="test queries to time `ask` on (0: none)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    dataset = BeirDataset.load(SCIFACT, args.split)
    with tempfile.TemporaryDirectory(prefix="quarry-bench-ctx-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, log_level="warning")
        configure_logging(settings)
        async with open_runtime(settings, load_models=True) as rt:
            me_key = (data_dir / "admin.key").read_text().strip()
            me = await rt.keys.authenticate_key(me_key)
            pid = await project_id(rt, me, args.project, dataset)
            assert rt.embedder is not None
            # The same passages are counted at every budget: remember their counts.
            count = functools.lru_cache(maxsize=None)(
                lambda text: rt.gateway.count_tokens("local", text)
            )
            builder = ContextBuilder(count, max_per_document=args.max_per_document)
            focusing = ContextBuilder(
                count, max_per_document=args.max_per_document, passage_tokens=args.passage_tokens
            )
            per_query = []
            started = time.perf_counter()
            for query_id, text in dataset.queries.items():
                response = await rt.search.search(pid, SearchRequest(query=text, k=args.k))
                hits = response.hits
                rows = await rt.db.fetch_all(
                    "search.chunk_vectors",
                    project_id=pid,
                    model=rt.embedder.model_id,
                    chunk_ids=[h.chunk_id for h in hits],
                )
                vectors = {row["chunk_id"]: row["embedding"].to_numpy() for row in rows}
                gold = {d for d, s in dataset.qrels[query_id].items() if s > 0}
                per_query.append((hits, vectors, gold, response.search_metadata.query_terms))
            search_s = time.perf_counter() - started

            def measure(make, budget: int) -> dict[str, float]:
                recalls, tokens, passages = [], [], []
                reasons: Counter[str] = Counter()
                for hits, vectors, gold, terms in per_query:
                    context = make(
                        hits,
                        vectors,
                        terms,
                        Budget(total=budget + 1, answer_reserve=1, evidence_share=1.0),
                    )
                    recalls.append(recall(context, hits, gold))
                    tokens.append(context.tokens)
                    passages.append(len(context.passages))
                    reasons.update(d.reason for d in context.dropped)
                n = len(per_query)
                return {
                    "evidence_recall": statistics.fmean(recalls),
                    "tokens": statistics.fmean(tokens),
                    "passages": statistics.fmean(passages),
                    **{
                        f"dropped_{r}": reasons[r] / n
                        for r in ("near_duplicate", "per_document_cap", "over_budget")
                    },
                }

            def naive(hits, vectors, terms, budget):
                return naive_context(hits, budget, count)

            def built(hits, vectors, terms, budget):
                return builder.build(hits, budget, vectors)

            def focused(hits, vectors, terms, budget):
                return focusing.build(hits, budget, vectors, query_terms=terms)

            def equal_recall(make, base, budget, cache):
                """The smallest budget (steps of STEP) at which ``make`` reaches the baseline's
                recall, and its figures."""
                for candidate in range(STEP, budget + STEP, STEP):
                    figures = cache.get(candidate) or measure(make, candidate)
                    cache[candidate] = figures
                    if figures["evidence_recall"] >= base["evidence_recall"]:
                        return {"budget": candidate, **figures}
                return None

            started = time.perf_counter()
            rows_out = []
            cache: dict[int, dict[str, float]] = {}
            focus_cache: dict[int, dict[str, float]] = {}
            for budget in budgets:
                base = measure(naive, budget)
                row = {
                    "budget": budget,
                    "naive": base,
                    "builder": measure(built, budget),
                    "focused": measure(focused, budget),
                }
                match = equal_recall(built, base, budget, cache)
                if match is not None:
                    row["builder_at_equal_recall"] = match
                    row["token_saving_at_equal_recall"] = 1 - match["tokens"] / base["tokens"]
                match = equal_recall(focused, base, budget, focus_cache)
                if match is not None:
                    row["focused_at_equal_recall"] = match
                    row["focused_saving_at_equal_recall"] = 1 - match["tokens"] / base["tokens"]
                rows_out.append(row)
            build_s = time.perf_counter() - started
            ask = await ask_latency(rt, pid, list(dataset.queries.values())[: args.ask])
    print(
        f"SciFact {args.split}, {len(per_query)} queries, top {args.k} hybrid chunks, "
        f"SmolLM2 tokens ({os.cpu_count()} cores; search {search_s:.0f} s, builds {build_s:.0f} s)"
    )
    print(
        f"{'budget':>6} | {'naive':>15} | {'builder':>23} | {'focused':>23} | "
        "equal-recall tokens (saving): builder, focused"
    )
    print(f"{'':>6} | {'recall':>7} {'tokens':>7} | {'recall':>7} {'tokens':>7} {'dropped':>7} "
          f"| {'recall':>7} {'tokens':>7} {'passages':>7} |")  # fmt: skip

    def saving(row: dict, arm: str) -> str:
        eq = row.get(f"{arm}_at_equal_recall")
        key = (
            "token_saving_at_equal_recall" if arm == "builder" else "focused_saving_at_equal_recall"
        )
        return f"{eq['tokens']:.0f} ({row[key]:.0%})" if eq else "not reached"

    for row in rows_out:
        b, n, m, f = row["budget"], row["naive"], row["builder"], row["focused"]
        dropped = m["dropped_near_duplicate"] + m["dropped_per_document_cap"]
        print(
            f"{b:>6} | {n['evidence_recall']:>7.4f} {n['tokens']:>7.0f} | "
            f"{m['evidence_recall']:>7.4f} {m['tokens']:>7.0f} {dropped:>7.2f} | "
            f"{f['evidence_recall']:>7.4f} {f['tokens']:>7.0f} {f['passages']:>8.1f} | "
            f"{saving(row, 'builder')}, {saving(row, 'focused')}"
        )
    savings = [
        r[key]
        for r in rows_out
        for key in ("token_saving_at_equal_recall", "focused_saving_at_equal_recall")
        if key in r
    ]
    better = all(r["focused"]["evidence_recall"] > r["naive"]["evidence_recall"] for r in rows_out)
    print(
        f"target: >= {TARGET_SAVING:.0%} fewer tokens at equal recall, or higher recall at equal "
        f"tokens: best saving {max(savings):.0%}; focused recall above naive's at every budget "
        f"(same budget): {better}"
    )
    if ask:
        print(
            f"ask with the bundled SmolLM2 ({ask['questions']} questions, default budget): "
            f"time to first token {ask['ttft_p50_ms']:.0f} ms p50 / {ask['ttft_p95_ms']:.0f} ms "
            f"p95; end to end {ask['e2e_p50_ms']:.0f} ms p50 / {ask['e2e_p95_ms']:.0f} ms p95; "
            f"{ask['output_tokens_mean']:.0f} output tokens on average"
        )
    if args.json:
        result = {
            "queries": len(per_query),
            "k": args.k,
            "max_per_document": args.max_per_document,
            "passage_tokens": args.passage_tokens,
            "budgets": rows_out,
            "ask": ask,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
