"""Ingestion with real processes: a worker killed mid-document, and the CLI end to end."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_ingest import invariant_violations
from tests.support import QuarryProcess, quarry_env, run_cli

pytestmark = pytest.mark.acceptance


def _document(url: str, external_id: str) -> dict:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT d.id, d.status, d.chunk_count, d.attempts, "
            "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS stored "
            "FROM documents d WHERE d.external_id = %s",
            (external_id,),
        ).fetchone()
    assert row is not None
    return dict(zip(["id", "status", "chunk_count", "attempts", "stored"], row, strict=True))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_worker_killed_mid_document_leaves_nothing_partial_and_the_job_completes(
    fresh_database: str, tmp_path: Path
) -> None:
    env = quarry_env(
        database_url=fresh_database,
        data_dir=tmp_path / "data",
        worker_heartbeat_interval=0.5,
        worker_stalled_after=3,
        worker_concurrency=1,
    )
    big = tmp_path / "big.txt"
    # About 300 chunks: the model needs seconds for them, so the kill lands mid-document.
    big.write_text(
        "\n\n".join(f"Paragraph {i}. " + "Words of the paragraph. " * 40 for i in range(300))
    )
    created = run_cli("projects", "create", "crash", env=env)
    assert created.returncode == 0, created.stderr
    queued = run_cli("ingest", str(big), "--project", "crash", "--no-wait", env=env)
    assert queued.returncode == 0, queued.stderr
    external_id = str(big.resolve())

    first = QuarryProcess(["worker"], env, tmp_path / "worker1.log")
    try:
        _wait(
            lambda: _document(fresh_database, external_id)["status"] == "indexing",
            90,
            "the worker to claim the document",
        )
        time.sleep(1.0)  # into the embedding of its chunks
        first.process.kill()  # SIGKILL: no cleanup of any kind
        first.process.wait(10)
    finally:
        first.stop()
    after_kill = _document(fresh_database, external_id)
    assert after_kill["status"] == "indexing", "the kill came too late to test anything"
    assert after_kill["stored"] == 0  # no partial chunks
    assert invariant_violations(fresh_database) == []

    second = QuarryProcess(["worker"], env, tmp_path / "worker2.log")
    try:
        done = _wait(
            lambda: (d := _document(fresh_database, external_id))["status"] == "complete" and d,
            180,
            "the document to complete after the kill",
        )
    finally:
        assert second.stop() == 0, second.output()
    assert done["attempts"] == 2
    assert done["stored"] == done["chunk_count"] >= 250
    assert invariant_violations(fresh_database) == []
    with psycopg.connect(fresh_database) as conn:
        indices = [
            r[0]
            for r in conn.execute(
                "SELECT chunk_index FROM chunks WHERE document_id = %s ORDER BY 1", (done["id"],)
            )
        ]
        jobs = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs "
            "WHERE args ->> 'document_id' = %s GROUP BY 1",
            (str(done["id"]),),
        ).fetchall()
    assert indices == list(range(done["chunk_count"]))
    assert jobs == [("succeeded", 1)]  # the same job, taken over, not a duplicate


def test_cli_ingest_files_folders_and_globs(fresh_database: str, tmp_path: Path) -> None:
    env = quarry_env(database_url=fresh_database, data_dir=tmp_path / "data")
    docs = tmp_path / "docs"
    (docs / "deep").mkdir(parents=True)
    (docs / "a.txt").write_text("Alpha document about rivers.")
    (docs / "deep" / "b.md").write_text("# Bravo\n\nA document about mountains.")
    (docs / "deep" / "c.html").write_text(
        "<html><body><p>Charlie about lakes and seas.</p></body></html>"
    )
    (docs / ".hidden.txt").write_text("never ingested")
    (docs / "script.py").write_text("print('not a document')")
    (docs / "empty.txt").write_text("   ")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "d.txt").write_text("Delta about forests.")
    (extra / "e.txt").write_text("Echo about deserts.")
    # A name that is not UTF-8 (Latin-1 "é"): Python holds the byte as a lone surrogate,
    # which Postgres cannot store; it is named f\xe9.txt, not refused.
    (extra / os.fsdecode(b"f\xe9.txt")).write_text("Foxtrot about caves.")
    (tmp_path / "tool.exe").write_bytes(b"MZ")

    assert run_cli("projects", "create", "kb", env=env).returncode == 0
    result = run_cli(
        "ingest",
        str(docs),
        f"{extra}/*.txt",
        str(tmp_path / "tool.exe"),
        "--project",
        "kb",
        "--tag",
        "batch1",
        "--json",
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr  # one rejected, one failed
    summary = json.loads(result.stdout)
    assert summary["submitted"] == 7
    assert summary["complete"] == 6
    assert summary["failed"] == 1
    assert summary["rejected"] == 1
    assert summary["rejections"][0]["code"] == "unsupported_format"
    assert summary["failures"][0]["code"] == "empty_document"
    assert "skipped 1 file" in result.stderr

    again = run_cli(
        "ingest", str(docs), f"{extra}/*.txt", "--project", "kb", "--json", env=env, timeout=300
    )
    # a.txt, b.md, c.html, empty.txt, d.txt, e.txt and f\xe9.txt under the same names; a
    # submission says what the document is, so without --tag they lose batch1, in place.
    assert json.loads(again.stdout)["metadata_updated"] == 7
    third = run_cli(
        "ingest", str(docs), f"{extra}/*.txt", "--project", "kb", "--json", env=env, timeout=300
    )
    assert json.loads(third.stdout)["unchanged"] == 7

    shown = json.loads(run_cli("projects", "show", "kb", "--json", env=env).stdout)
    assert shown["document_count"] == 7
    assert shown["documents_by_status"] == {"pending": 0, "indexing": 0, "complete": 6, "failed": 1}
    assert shown["chunk_count"] >= 5

    failed = json.loads(run_cli("jobs", "failed", "--project", "kb", "--json", env=env).stdout)
    assert [d["error_code"] for d in failed] == ["empty_document"]
    retried = run_cli("jobs", "retry", failed[0]["id"], "--project", "kb", env=env)
    assert "queued 1" in retried.stdout
    usage = run_cli("jobs", "retry", "--project", "kb", env=env)
    assert usage.returncode == 2
