"""Submitting many documents at once: the outcome of each as if submitted alone, one queued job
per changed document, and nothing of a batch left behind when its write fails."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from quarry.cli.ingest import Report, _submit
from quarry.errors import EmptyDocument, InvalidInput, UnsupportedFormat
from quarry.ingest import documents as documents_module
from quarry.ingest.documents import SUBMIT_BATCH, text_source
from quarry.ingest.models import Status, Submission
from quarry.ingest.source import Source
from quarry.jobs.tasks import INGEST
from quarry.runtime import Runtime
from quarry.tenancy.models import Principal


def upload(name: str, data: bytes, title: str = "") -> Source:
    return Source(data=data, name=name, external_id=name, kind="upload", title=title)


def outcome(result: Submission | Exception) -> tuple[str, str] | str:
    if isinstance(result, Submission):
        return (result.document.external_id, result.outcome)
    return type(result).__name__


def queued_jobs(url: str) -> list[str]:
    """The document id of every queued ingest job, sorted."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT args->>'document_id' FROM procrastinate_jobs"
            " WHERE task_name = %s AND status = 'todo'",
            (INGEST,),
        ).fetchall()
    return sorted(row[0] for row in rows)


BATCH = [
    upload("a.txt", b"alpha"),
    upload("b.txt", b""),  # empty
    upload("a.txt", b"alpha"),  # the same again: unchanged
    upload("tool.exe", b"MZ\x90"),  # no parser
    upload("a.txt", b"beta"),  # changed: a new version
    upload("c.md", b"# Gamma"),
    upload("d.txt", b"delta", title="bad\x00title"),  # Postgres cannot hold it
]


async def test_each_source_has_the_outcome_it_would_have_alone(
    runtime: Runtime, admin_principal: Principal, fresh_database: str
) -> None:
    together = await runtime.projects.create(admin_principal, "together")
    alone = await runtime.projects.create(admin_principal, "alone")

    results = await runtime.documents.submit_many(together.id, BATCH)

    one_by_one: list[Submission | Exception] = []
    for source in BATCH:
        try:
            one_by_one.append(await runtime.documents.submit(alone.id, source))
        except (EmptyDocument, UnsupportedFormat, InvalidInput) as exc:
            one_by_one.append(exc)
    assert (
        [outcome(r) for r in results]
        == [outcome(r) for r in one_by_one]
        == [
            ("a.txt", "created"),
            "EmptyDocument",
            ("a.txt", "unchanged"),
            "UnsupportedFormat",
            ("a.txt", "updated"),
            ("c.md", "created"),
            "InvalidInput",
        ]
    )
    # Created and updated sources carry the version they made; an unchanged one, its document
    # as the whole batch left it.
    versions = [r.document.version for r in results if isinstance(r, Submission)]
    assert versions == [1, 2, 2, 1]
    documents = {d.external_id: d for d in await runtime.documents.list_page(together.id)}
    assert sorted(documents) == ["a.txt", "c.md"]
    # One queued job per changed document (a.txt's second change found its job still queued),
    # in both projects.
    changed = [str(d.id) for d in documents.values()]
    alone_ids = [str(d.id) for d in await runtime.documents.list_page(alone.id)]
    assert queued_jobs(fresh_database) == sorted(changed + alone_ids)


async def test_a_queued_job_for_one_document_does_not_stop_the_rest_being_queued(
    runtime: Runtime, admin_principal: Principal, fresh_database: str
) -> None:
    """Queueing a batch is one statement, which fails as a whole when any document already has
    a job waiting; each is then queued on its own."""
    project = await runtime.projects.create(admin_principal, "queued")
    first = await runtime.documents.submit(project.id, upload("x.txt", b"one"))
    results = await runtime.documents.submit_many(
        project.id, [upload("y.txt", b"why"), upload("x.txt", b"two"), upload("z.txt", b"zed")]
    )
    assert [outcome(r) for r in results] == [
        ("y.txt", "created"),
        ("x.txt", "updated"),
        ("z.txt", "created"),
    ]
    ids = [str(first.document.id)] + [
        str(r.document.id) for r in results if isinstance(r, Submission) and r.outcome == "created"
    ]
    assert queued_jobs(fresh_database) == sorted(ids)


async def test_a_failed_write_leaves_none_of_the_batch(
    runtime: Runtime, admin_principal: Principal, fresh_database: str
) -> None:
    project = await runtime.projects.create(admin_principal, "atomic")
    with psycopg.connect(fresh_database, autocommit=True) as conn:  # a write that will fail
        conn.execute("ALTER TABLE documents ADD CONSTRAINT no_poison CHECK (title <> 'poison')")
    batch = [upload("ok.txt", b"fine"), upload("bad.txt", b"also fine", title="poison")]
    with pytest.raises(psycopg.errors.CheckViolation):
        await runtime.documents.submit_many(project.id, batch)
    assert await runtime.documents.list_page(project.id) == []
    assert queued_jobs(fresh_database) == []


async def test_cli_ingest_submits_in_batches_and_reports_every_file(
    runtime: Runtime, admin_principal: Principal, tmp_path: Path
) -> None:
    project = await runtime.projects.create(admin_principal, "folder")
    files: list[Path] = []
    for i in range(SUBMIT_BATCH + 20):  # more than one batch
        path = tmp_path / f"note-{i:03}.txt"
        path.write_bytes(b"" if i % 100 == 7 else f"Note number {i}.".encode())
        files.append(path)
    files.append(tmp_path / "missing.txt")
    report = Report()
    await _submit(runtime, project.id, files, ("notes",), report)
    empty = {str(path) for i, path in enumerate(files) if i % 100 == 7}
    assert {r.name: r.code for r in report.rejected} == {
        **{name: "empty_document" for name in empty},
        str(tmp_path / "missing.txt"): "unreadable_file",
    }
    assert len(report.submitted) == SUBMIT_BATCH + 20 - len(empty)
    counts = await runtime.documents.counts(project.id)
    assert counts.documents_by_status["pending"] == len(report.submitted)
    assert all(isinstance(i, uuid.UUID) for i in report.submitted)


async def test_the_beir_loader_shape_of_texts_in_one_batch(
    runtime: Runtime, admin_principal: Principal
) -> None:
    project = await runtime.projects.create(admin_principal, "texts")
    sources = [
        text_source(f"Text {i}", external_id=str(i), title="", fmt="txt", metadata={}, tags=())
        for i in range(50)
    ]
    results = await runtime.documents.submit_many(project.id, sources)
    assert [outcome(r) for r in results] == [(str(i), "created") for i in range(50)]
    again = await runtime.documents.submit_many(project.id, sources)
    assert {outcome(r)[1] for r in again} == {"unchanged"}


async def test_what_describes_a_document_changes_in_place_and_what_is_indexed_versions_it(
    runtime: Runtime, admin_principal: Principal, fresh_database: str
) -> None:
    """Metadata, tags and the source's name are updated without a new version or job; new
    content, a new format or a new title (chunks are embedded with it) make a new version.
    The same, submitted one by one and as one batch."""

    def source(name: str = "a.txt", title: str = "", tags: tuple[str, ...] = (), **meta: str):
        return Source(
            data=b"alpha", name=name, external_id="a", kind="upload", title=title,
            metadata=dict(meta), tags=tags,
        )  # fmt: skip

    steps = [
        (source(), "created", 1),
        (source(tags=("x",), team="a"), "metadata_updated", 1),
        (source(tags=("x",), team="a"), "unchanged", 1),
        (source(name="renamed.txt", tags=("x",), team="a"), "metadata_updated", 1),
        (source(name="renamed.txt", title="Alpha", tags=("x",), team="a"), "updated", 2),
        # No title: the one it has stays (an empty title asks for the parser's).
        (source(name="renamed.txt", tags=("x",), team="a"), "unchanged", 2),
        (source(name="renamed.md", tags=("x",), team="a"), "updated", 3),  # now Markdown
        (source(name="renamed.md"), "metadata_updated", 3),  # what is given is what it has
    ]
    alone = await runtime.projects.create(admin_principal, "alone")
    for given, expected, version in steps:
        with psycopg.connect(fresh_database, autocommit=True) as conn:  # as if indexed
            conn.execute("UPDATE documents SET status = 'complete'")
            conn.execute("DELETE FROM procrastinate_jobs")
        submitted = await runtime.documents.submit(alone.id, given)
        assert (submitted.outcome, submitted.document.version) == (expected, version)
        document = submitted.document
        assert (document.source, document.tags, document.metadata) == (
            given.name,
            list(given.tags),
            given.metadata,
        )
        # A new version without a title takes the parser's again (none here, for text).
        assert document.title == ("Alpha" if version == 2 else "")
        indexing = expected in ("created", "updated")
        assert document.status == ("pending" if indexing else "complete")
        assert queued_jobs(fresh_database) == ([str(document.id)] if indexing else [])

    together = await runtime.projects.create(admin_principal, "together")
    results = await runtime.documents.submit_many(together.id, [given for given, _, _ in steps])
    assert [outcome(r) for r in results] == [("a", expected) for _, expected, _ in steps]
    # Each change carries the version it made (an unchanged one, as the batch left it).
    assert [r.document.version for r in results if isinstance(r, Submission)] == [
        3 if expected == "unchanged" else version for _, expected, version in steps
    ]


async def test_every_failed_document_is_listed_past_a_page(
    runtime: Runtime,
    admin_principal: Principal,
    fresh_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`quarry jobs failed` lists them all (it once stopped at the first 1000)."""
    monkeypatch.setattr(documents_module, "PAGE_LIMIT", 2)
    project = await runtime.projects.create(admin_principal, "dead-letters")
    await runtime.documents.submit_many(
        project.id, [upload(f"{n}.txt", f"text {n}".encode()) for n in range(6)]
    )
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE documents SET status = 'failed' WHERE external_id <> '5.txt'")
    failed = await runtime.documents.list_all(project.id, status=Status.failed)
    assert sorted(d.external_id for d in failed) == [f"{n}.txt" for n in range(5)]
    assert [(d.created_at, d.id) for d in failed] == sorted(
        ((d.created_at, d.id) for d in failed), reverse=True
    )
    assert len(await runtime.documents.list_all(project.id)) == 6
