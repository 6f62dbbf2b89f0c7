"""quarry ingest, quarry jobs, quarry reindex."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quarry.cli.common import (
    JSON_OPTION,
    acting,
    err,
    out,
    print_json,
    print_table,
    run,
    settings_from,
)
from quarry.errors import DocumentError
from quarry.ingest.documents import Intake
from quarry.ingest.models import Document, Rejection, Status
from quarry.ingest.source import Source
from quarry.jobs.tasks import REEMBED
from quarry.runtime import Runtime, background_worker
from quarry.tenancy.models import Role

jobs_app = typer.Typer(no_args_is_help=True)
PROJECT = typer.Option(..., "--project", "-p", help="The project's name or id.")
SETTLED = {Status.complete.value, Status.failed.value}


def register(app: typer.Typer) -> None:
    app.command(name="ingest")(ingest)
    app.command(name="reindex")(reindex)
    app.add_typer(jobs_app, name="jobs", help="Failed documents (the dead letters) and retries.")


def expand(paths: Iterable[str], supported: set[str]) -> tuple[list[Path], int]:
    """Files named, found under folders (recursively) or matched by globs. Inside folders,
    hidden files and types quarry cannot read are skipped (and counted); a file named
    explicitly is always submitted, so its refusal is reported."""
    found: list[Path] = []
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if not path.exists() and any(ch in raw for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            found.extend(m for m in matches if m.is_file())
        elif path.is_dir():
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path)
                if not candidate.is_file() or any(p.startswith(".") for p in relative.parts):
                    continue
                if candidate.suffix.lower() in supported:
                    found.append(candidate)
                else:
                    skipped += 1
        else:
            found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, skipped


@dataclass(frozen=True)
class Settled:
    id: uuid.UUID
    status: str
    chunk_count: int
    error_code: str | None
    error: str | None


@dataclass
class Report:
    submitted: dict[uuid.UUID, str] = field(default_factory=dict)  # id -> path
    unchanged: int = 0
    metadata_updated: int = 0  # the same content, newly tagged: its index stands
    rejected: list[Rejection] = field(default_factory=list)
    final: list[Settled] = field(default_factory=list)
    indexing_seconds: float = 0.0


async def _submit(
    rt: Runtime, project_id: uuid.UUID, files: list[Path], tags: tuple[str, ...], report: Report
) -> None:
    intake = Intake(rt.documents, project_id)
    for path in files:
        name = path_name(path)
        try:
            if not path.is_file():
                raise FileNotFoundError(path)
            rt.documents.check_size(name, path.stat().st_size)  # before reading it
            data = path.read_bytes()
        except DocumentError as exc:
            intake.refuse(name, exc)
            continue
        except OSError as exc:
            report.rejected.append(Rejection(name=name, code="unreadable_file", detail=str(exc)))
            continue
        source = Source(data=data, name=name, external_id=name, kind="path", tags=tags)
        await intake.add(name, source)
    await intake.finish()
    for name, submission in intake.accepted:
        if submission.outcome == "unchanged":
            report.unchanged += 1
        elif submission.outcome == "metadata_updated":
            report.metadata_updated += 1
        else:
            report.submitted[submission.document.id] = name
    # Each refused file only: the rest of the batch goes on.
    report.rejected += [Rejection(name=n, code=e.code, detail=e.detail) for n, e in intake.refused]


def path_name(path: Path) -> str:
    """A path as text Postgres can hold. A file name need not be UTF-8 (Python carries its
    other bytes as lone surrogates); those bytes are written as ``\\xe9``, so the name stays
    unique and the same on every run (it is the document's external id)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


async def _wait(rt: Runtime, project_id: uuid.UUID, report: Report, show: bool) -> None:
    ids = list(report.submitted)
    started = time.monotonic()
    columns = (
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[chunks]} chunks  {task.fields[rate]:.1f} docs/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not show, transient=False) as progress:
        bar = progress.add_task("ingest", total=len(ids), chunks=0, rate=0.0)
        while True:
            rows = await rt.db.fetch_all("documents.statuses", project_id=project_id, ids=ids)
            done = [row for row in rows if row["status"] in SETTLED]
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(
                bar,
                completed=len(done),
                chunks=sum(row["chunk_count"] for row in done),
                rate=len(done) / elapsed,
            )
            if len(done) == len(ids):
                report.indexing_seconds = elapsed
                report.final = [
                    Settled(r["id"], r["status"], r["chunk_count"], r["error_code"], r["error"])
                    for r in rows
                ]
                return
            await asyncio.sleep(0.3)


def ingest(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files, folders (recursively) or globs."),
    project: str = PROJECT,
    tag: list[str] = typer.Option(
        [],
        "--tag",
        "-t",
        help="A tag for every document: their tags become these (none given: no tags).",
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until all are indexed."),
    worker: bool = typer.Option(
        True, "--worker/--no-worker", help="While waiting, index in this process too."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add documents to a project and (by default) wait while they are indexed."""
    settings = settings_from(ctx)
    started = time.monotonic()

    async def go() -> Report:
        report = Report()
        async with acting(settings, load_models=wait and worker) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.editor)
            files, skipped = expand(paths, set(rt.documents.registry.extensions))
            if skipped:
                err.print(f"skipped {skipped} file(s) of types quarry does not read")
            await _submit(rt, found.id, files, tuple(tag), report)
            if wait and report.submitted:
                async with background_worker(rt, "cli") if worker else contextlib.nullcontext():
                    await _wait(rt, found.id, report, show=not as_json)
        return report

    report = run(go())
    elapsed = time.monotonic() - started
    failed = [row for row in report.final if row.status == Status.failed.value]
    summary = {
        "submitted": len(report.submitted),
        "unchanged": report.unchanged,
        "metadata_updated": report.metadata_updated,
        "complete": sum(1 for r in report.final if r.status == Status.complete.value),
        "failed": len(failed),
        "rejected": len(report.rejected),
        "chunks": sum(r.chunk_count for r in report.final),
        "seconds": round(elapsed, 2),
    }
    if as_json:
        print_json(
            {
                **summary,
                "rejections": [r.model_dump() for r in report.rejected],
                "failures": [
                    {"path": report.submitted[r.id], "code": r.error_code, "error": r.error}
                    for r in failed
                ],
            }
        )
    else:
        out.print(
            "  ".join(f"{key}: {value}" for key, value in summary.items())
            + (
                f"  ({len(report.final) / report.indexing_seconds:.1f} docs/s indexing)"
                if report.indexing_seconds
                else ""
            )
        )
        for rejection in report.rejected:
            detail = escape(f"{rejection.name}: {rejection.detail} ({rejection.code})")
            out.print(f"[red]rejected[/] {detail}")
        for row in failed:
            out.print(f"[red]failed[/] {escape(f'{report.submitted[row.id]}: {row.error}')}")
    if report.rejected or failed:
        raise typer.Exit(1)


@jobs_app.command("failed")
def failed(ctx: typer.Context, project: str = PROJECT, as_json: bool = JSON_OPTION) -> None:
    """List the documents whose indexing failed, with their errors."""

    async def go() -> list[Document]:
        async with acting(settings_from(ctx)) as (rt, me):
            found = await rt.projects.resolve(me, project)
            return await rt.documents.list_all(found.id, status=Status.failed)

    documents = run(go())
    if as_json:
        print_json(documents)
        return
    print_table(
        "failed documents",
        ["id", "source", "attempts", "code", "error"],
        [(d.id, d.source, d.attempts, d.error_code, d.error) for d in documents],
    )


@jobs_app.command("retry")
def retry(
    ctx: typer.Context,
    document_ids: list[str] = typer.Argument(None, help="Failed documents to retry."),
    project: str = PROJECT,
    all_failed: bool = typer.Option(False, "--all", help="Retry every failed document."),
) -> None:
    """Queue failed documents again (a worker or `quarry serve` picks them up)."""
    if bool(document_ids) == all_failed:
        err.print("name document ids or pass --all (not both)")
        raise typer.Exit(2)
    try:
        ids = [uuid.UUID(d) for d in document_ids] if document_ids else None
    except ValueError:
        err.print("document ids are UUIDs (see `quarry jobs failed`)")
        raise typer.Exit(2) from None

    async def go() -> int:
        async with acting(settings_from(ctx)) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.editor)
            return await rt.documents.retry(found.id, ids)

    out.print(f"queued {run(go())} document(s) again")


def reindex(
    ctx: typer.Context,
    project: str = PROJECT,
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Re-embed in this process."),
) -> None:
    """Re-embed every document with the configured embedding model."""

    async def go() -> tuple[int, int]:
        async with acting(settings_from(ctx), load_models=wait) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.owner)
            before = await rt.db.fetch_one("jobs.last_id")
            count = await rt.documents.reindex(found.id)
            failed = 0
            if wait:
                async with background_worker(rt, "cli"):
                    while True:
                        row = await rt.db.fetch_one(
                            "jobs.unfinished_for_project", project_id=found.id
                        )
                        if row is None or row["n"] == 0:
                            break
                        await asyncio.sleep(0.3)
                row = await rt.db.fetch_one(
                    "jobs.failed_since",
                    task=REEMBED,
                    project_id=found.id,
                    after=before["id"] if before else 0,
                )
                failed = int(row["n"]) if row else 0
            return count, failed

    count, failed = run(go())
    if failed:
        err.print(
            f"{failed} of {count} document(s) could not be re-embedded (their jobs failed; the "
            "worker's log says why); they keep their old vectors. Run the command again once "
            "the cause is fixed."
        )
        raise typer.Exit(1)
    out.print(f"{'re-embedded' if wait else 'queued'} {count} document(s)")
