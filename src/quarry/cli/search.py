"""quarry search, quarry eval beir."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from quarry.cli.common import (
    JSON_OPTION,
    acting,
    err,
    fail,
    out,
    print_json,
    print_table,
    run,
    settings_from,
)
from quarry.errors import InvalidInput
from quarry.runtime import Runtime, background_worker
from quarry.search.beir import LoadProgress, evaluate, load_corpus, variants
from quarry.search.evaluate import BeirDataset, compare
from quarry.search.models import MAX_K, Mode, SearchRequest, SearchResponse
from quarry.tenancy.models import Role

eval_app = typer.Typer(no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)
    app.add_typer(eval_app, name="eval", help="Measure retrieval quality on a dataset.")


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for."),
    project: str = typer.Option(..., "--project", "-p", help="The project's name or id."),
    mode: Mode = typer.Option(Mode.hybrid, "--mode", "-m", help="bm25, vector or hybrid."),
    k: int = typer.Option(10, "-k", min=1, max=MAX_K, help="How many hits."),
    per_document: bool = typer.Option(
        False, "--per-document", help="At most one hit (the best chunk) per document."
    ),
    rerank: bool | None = typer.Option(
        None,
        "--rerank/--no-rerank",
        help="Rerank (default: in hybrid mode, when a reranker is configured).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Search a project and print the hits as a table."""
    settings = settings_from(ctx)

    async def go() -> SearchResponse:
        async with acting(settings, load_models=True) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.viewer)
            try:
                request = SearchRequest(
                    query=query, mode=mode, k=k, per_document=per_document, rerank=rerank
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"]) or "query"
                raise InvalidInput(f"{field}: {first['msg']}", field=field) from None
            return await rt.search.search(found.id, request)

    response = run(go())
    if as_json:
        print_json(response)
        return
    meta = response.search_metadata
    rows = [
        (
            i,
            f"{hit.score:.4f}",
            " ".join(f"{name}:{rank}" for name, rank in hit.ranks.items()),
            hit.document_title or hit.external_id,
            hit.page if hit.page is not None else "",
            _snippet(hit.highlight, 160),
        )
        for i, hit in enumerate(response.hits, start=1)
    ]
    print_table(
        f"{len(response.hits)} hit(s), {meta.mode.value}",
        ["#", "score", "ranks", "document", "page", "snippet"],
        rows,
    )
    timings = "  ".join(f"{name} {ms:.1f} ms" for name, ms in meta.timings_ms.items())
    out.print(f"[dim]{timings}[/]", markup=True)
    if meta.documents_indexing:
        out.print(f"{meta.documents_indexing} document(s) still indexing, not searchable yet")


def _snippet(highlight: str, limit: int) -> Text:
    """The highlight with its <mark>ed terms in bold, cut to ``limit`` visible characters."""
    text = Text()
    marked = False
    for part in re.split(r"(</?mark>)", highlight):
        if part in ("<mark>", "</mark>"):
            marked = part == "<mark>"
        elif part:
            text.append(part, style="bold" if marked else "")
    if len(text) > limit:
        text.truncate(limit)
        text.append("…")
    return text


@eval_app.command(name="beir")
def eval_beir(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A BEIR dataset folder (corpus.jsonl, queries.jsonl)."),
    split: str = typer.Option("test", "--split", help="Which qrels/<split>.tsv to score."),
    modes: list[Mode] = typer.Option(
        [Mode.bm25, Mode.vector, Mode.hybrid], "--mode", help="Modes to run (repeatable)."
    ),
    project: str | None = typer.Option(
        None, "--project", "-p", help="Evaluate an already loaded project instead of a fresh one."
    ),
    candidates: int | None = typer.Option(
        None,
        "--candidates",
        min=1,
        max=1000,
        help="Each retriever's depth in chunks (default: QUARRY_SEARCH_CANDIDATES).",
    ),
    json_file: Path | None = typer.Option(None, "--json", help="Write the figures here."),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="A saved --json run; exit 1 when a metric drops past tolerance."
    ),
    tolerance: float = typer.Option(0.01, "--tolerance", min=0, help="Allowed drop per metric."),
) -> None:
    """Load a BEIR dataset into a fresh project, run every query in each mode, report nDCG@10,
    Recall@10, Recall@100, MRR@10 and p50/p95 latency per mode."""
    settings = settings_from(ctx)
    before = _read_baseline(baseline) if baseline else None

    async def go() -> dict[str, object]:
        dataset = BeirDataset.load(path, split)
        async with acting(settings, load_models=True) as (rt, me):
            if project is None:
                name = f"beir-{path.name.lower()}-{split}-{_stamp()}"[:63]
                created = await rt.projects.create(me, name)
                project_id = created.id
                async with background_worker(rt, "eval"):
                    loaded = await _load(rt, project_id, dataset)
                if loaded.failed:
                    err.print(f"{loaded.failed} document(s) failed to index")
            else:
                project_id = (await rt.projects.resolve(me, project, Role.viewer)).id
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
            ) as progress:
                names = [v.name for v in variants(modes, reranker=rt.search.reranker is not None)]
                bars = {name: progress.add_task(name, total=len(dataset.queries)) for name in names}
                figures = await evaluate(
                    rt,
                    project_id,
                    dataset,
                    modes,
                    candidates=candidates,
                    on_query=lambda mode, done: progress.update(bars[mode], completed=done),
                )
            counts = await rt.documents.counts(project_id)
        return {
            "dataset": path.name,
            "split": split,
            "queries": len(dataset.queries),
            "documents": counts.document_count,
            "chunks": counts.chunk_count,
            "embedding_model": rt.embedder.model_id if rt.embedder else None,
            "candidates": candidates or settings.search_candidates,
            "k1": settings.bm25_k1,
            "b": settings.bm25_b,
            "reranker": rt.search.reranker.name if rt.search.reranker else None,
            "rerank_depth": rt.search.rerank_depth,
            "modes": figures,
        }

    result = run(go())
    modes_figures = result["modes"]
    assert isinstance(modes_figures, dict)
    metrics = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms"]
    print_table(
        f"{result['dataset']} {split}: {result['queries']} queries, {result['documents']} "
        f"documents, {result['chunks']} chunks",
        ["mode", *metrics],
        [[mode, *(figures[m] for m in metrics)] for mode, figures in modes_figures.items()],
    )
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result, indent=2) + "\n")
    if before is not None:
        # Compare the modes this run measured (``--mode`` may pick a few of the baseline's).
        shared = {mode: figures for mode, figures in before.items() if mode in modes_figures}
        if not shared:
            fail(f"the baseline {baseline} has none of the modes this run measured")
        drops = compare(modes_figures, shared, tolerance)
        for drop in drops:
            err.print(f"[bold red]regression:[/] {drop}", markup=True)
        if drops:
            raise typer.Exit(1)
        out.print(f"no metric dropped by more than {tolerance} against {baseline}")


def _read_baseline(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
        modes = data["modes"]
        assert isinstance(modes, dict)
        return modes
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        fail(f"cannot read the baseline {path}: {exc}")


async def _load(rt: Runtime, project_id: uuid.UUID, dataset: BeirDataset) -> LoadProgress:
    with Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        bar = progress.add_task("load", total=dataset.documents or None)

        def show(state: LoadProgress) -> None:
            progress.update(bar, total=state.submitted, completed=state.settled)

        return await load_corpus(rt, project_id, dataset, show)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
