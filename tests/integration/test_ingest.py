"""Documents from upload to chunks, over the real app, model and database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import psycopg
import pytest

from quarry.runtime import Runtime
from quarry.tenancy.users import NewUser
from tests import files
from tests.conftest import bearer

pytestmark = pytest.mark.usefixtures("ingest_client")


async def wait_settled(client: httpx.AsyncClient, key: dict, project: str, timeout: float = 60):
    """Wait until no document of the project is pending or indexing; return them all."""
    deadline = time.monotonic() + timeout
    while True:
        page = (await client.get(f"/projects/{project}/documents", headers=key)).json()
        counts = page["counts"]["documents_by_status"]
        if counts["pending"] == 0 and counts["indexing"] == 0:
            return {d["external_id"]: d for d in page["documents"]}
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.1)


@pytest.fixture
async def project(ingest_client: httpx.AsyncClient, admin: NewUser) -> tuple[str, dict]:
    key = bearer(admin.api_key.secret)
    made = await ingest_client.post("/projects", json={"name": "docs"}, headers=key)
    assert made.status_code == 201
    return "docs", key


def invariant_violations(url: str) -> list[str]:
    """Chunks, vectors and statistics that disagree with each other."""
    checks = {
        "chunk without document": "SELECT count(*) FROM chunks c LEFT JOIN documents d "
        "ON d.id = c.document_id WHERE d.id IS NULL",
        "chunk without embedding": "SELECT count(*) FROM chunks c WHERE NOT EXISTS "
        "(SELECT 1 FROM chunk_embeddings e WHERE e.chunk_id = c.id)",
        "chunk_count disagrees": "SELECT count(*) FROM documents d WHERE d.chunk_count <> "
        "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id)",
        "duplicate chunk index": "SELECT count(*) FROM (SELECT document_id, chunk_index FROM "
        "chunks GROUP BY 1, 2 HAVING count(*) > 1) x",
        "stats disagree": "SELECT count(*) FROM lexical_stats s WHERE s.chunk_count <> "
        "(SELECT count(*) FROM chunks c WHERE c.project_id = s.project_id) OR s.term_count <> "
        "(SELECT coalesce(sum(term_count), 0) FROM chunks c WHERE c.project_id = s.project_id)",
        "postings disagree": "SELECT count(*) FROM chunks c WHERE c.term_count <> "
        "(SELECT coalesce(sum(p.tf), 0) FROM chunk_terms p WHERE p.chunk_id = c.id)",
        "posting without its chunk": "SELECT count(*) FROM chunk_terms p LEFT JOIN chunks c "
        "ON c.id = p.chunk_id AND c.project_id = p.project_id WHERE c.id IS NULL",
    }
    with psycopg.connect(url) as conn:
        return [name for name, sql in checks.items() if conn.execute(sql).fetchone()[0]]


# One NUL among text: under the text parser's 1% of control characters, so not binary.
UTF16_WITH_NUL = ("Geothermal\x00heat pumps warm houses. " + "Heat rises. " * 10).encode("utf-16")


async def test_every_format_is_indexed(
    ingest_client: httpx.AsyncClient, project, fresh_database: str
) -> None:
    name, key = project
    uploads = [
        (
            "files",
            (
                "report.pdf",
                files.pdf(["Solar panels on page one.", "Wind on page two."]),
                "application/pdf",
            ),
        ),
        (
            "files",
            (
                "handbook.docx",
                files.docx_file([("h1", "Handbook"), ("p", "Leave policy.")]),
                "application/octet-stream",
            ),
        ),
        ("files", ("page.html", files.HTML, "text/html")),
        ("files", ("notes.md", b"# Notes\n\nMarkdown body text.", "text/markdown")),
        ("files", ("plain.txt", b"Plain text body.", "text/plain")),
        ("files", ("data.json", b'{"k": "json value"}', "application/json")),
        ("files", ("table.csv", b"name,role\nann,owner\n", "text/csv")),
        # Text with NUL characters, which Postgres' text cannot hold: a PDF's extracted text
        # and a UTF-16 file can carry them. Each becomes a space; the document is indexed.
        ("files", ("nul.pdf", files.pdf(["Tidal\x00power on page one."]), "application/pdf")),
        ("files", ("utf16.txt", UTF16_WITH_NUL, "text/plain")),
    ]
    response = await ingest_client.post(
        f"/projects/{name}/documents",
        files=uploads,
        data={"metadata": '{"team": "ops"}', "tags": "a, b"},
        headers=key,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == []
    assert {s["outcome"] for s in body["documents"]} == {"created"}
    documents = await wait_settled(ingest_client, key, name)
    assert {d["status"] for d in documents.values()} == {"complete"}, documents
    assert documents["report.pdf"]["format"] == "pdf"
    assert documents["plain.txt"]["metadata"] == {"team": "ops"}
    assert documents["plain.txt"]["tags"] == ["a", "b"]
    assert documents["handbook.docx"]["title"] == "Handbook"

    pdf_id = documents["report.pdf"]["id"]
    chunks = (
        await ingest_client.get(f"/projects/{name}/documents/{pdf_id}/chunks", headers=key)
    ).json()
    assert chunks[0]["page"] == 1
    assert chunks[0]["embedding_models"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert chunks[0]["token_count"] <= 256
    assert chunks[0]["term_count"] > 0
    assert invariant_violations(fresh_database) == []
    project_view = (await ingest_client.get(f"/projects/{name}", headers=key)).json()
    for source, text in (("nul.pdf", "Tidal power"), ("utf16.txt", "Geothermal heat")):
        held = (
            await ingest_client.get(
                f"/projects/{name}/documents/{documents[source]['id']}/chunks", headers=key
            )
        ).json()
        assert text in held[0]["text"], held
    assert project_view["document_count"] == 9
    assert project_view["documents_by_status"]["complete"] == 9
    assert project_view["chunk_count"] == sum(d["chunk_count"] for d in documents.values())


async def test_reupload_is_idempotent_and_a_new_version_reuses_embeddings(
    ingest_client: httpx.AsyncClient, project, ingest_runtime: Runtime, fresh_database: str
) -> None:
    from quarry.testing import CountingEmbedder

    counting = CountingEmbedder(ingest_runtime.pipeline.embedder)
    ingest_runtime.pipeline.embedder = counting
    name, key = project
    paragraphs = [" ".join([f"Paragraph {i} sentence with words."] * 30) for i in range(6)]
    first = "\n\n".join(paragraphs).encode()
    up = await ingest_client.post(
        f"/projects/{name}/documents", files={"files": ("doc.txt", first)}, headers=key
    )
    assert up.json()["documents"][0]["outcome"] == "created"
    documents = await wait_settled(ingest_client, key, name)
    embedded_first = len(counting.texts)
    chunk_count = documents["doc.txt"]["chunk_count"]
    assert embedded_first == chunk_count >= 3

    again = await ingest_client.post(
        f"/projects/{name}/documents", files={"files": ("doc.txt", first)}, headers=key
    )
    assert again.json()["documents"][0]["outcome"] == "unchanged"
    await wait_settled(ingest_client, key, name)
    assert len(counting.texts) == embedded_first  # nothing embedded, nothing written

    # The same content with new tags and metadata: described anew in place, not re-indexed.
    tagged = await ingest_client.post(
        f"/projects/{name}/documents",
        files={"files": ("doc.txt", first)},
        data={"tags": "reviewed", "metadata": '{"team": "search"}'},
        headers=key,
    )
    (submitted,) = tagged.json()["documents"]
    assert submitted["outcome"] == "metadata_updated"
    assert submitted["document"]["version"] == 1
    assert submitted["document"]["status"] == "complete"
    assert submitted["document"]["tags"] == ["reviewed"]
    documents = await wait_settled(ingest_client, key, name)
    assert documents["doc.txt"]["metadata"] == {"team": "search"}
    assert documents["doc.txt"]["chunk_count"] == chunk_count
    assert len(counting.texts) == embedded_first
    found = await ingest_client.post(
        f"/projects/{name}/search",
        json={"query": "paragraph sentence", "mode": "bm25", "filters": {"tags": ["reviewed"]}},
        headers=key,
    )
    assert {hit["document_id"] for hit in found.json()["hits"]} == {submitted["document"]["id"]}

    changed = "\n\n".join([*paragraphs[:-1], "A brand new closing paragraph."]).encode()
    v2 = await ingest_client.post(
        f"/projects/{name}/documents", files={"files": ("doc.txt", changed)}, headers=key
    )
    assert v2.json()["documents"][0]["outcome"] == "updated"
    documents = await wait_settled(ingest_client, key, name)
    assert documents["doc.txt"]["version"] == 2
    new_texts = counting.texts[embedded_first:]
    assert 0 < len(new_texts) < documents["doc.txt"]["chunk_count"]  # only the new chunks
    assert any("brand new" in text for text in new_texts)
    assert invariant_violations(fresh_database) == []


async def test_racing_duplicate_uploads_leave_one_set_of_chunks(
    ingest_client: httpx.AsyncClient, project, fresh_database: str
) -> None:
    name, key = project
    data = (" ".join(["Racing upload sentence."] * 200)).encode()

    async def upload():
        return await ingest_client.post(
            f"/projects/{name}/documents", files={"files": ("race.txt", data)}, headers=key
        )

    results = await asyncio.gather(*(upload() for _ in range(6)))
    assert all(r.status_code == 202 for r in results)
    assert {r.json()["documents"][0]["document"]["id"] for r in results} == {
        results[0].json()["documents"][0]["document"]["id"]
    }
    documents = await wait_settled(ingest_client, key, name)
    assert len(documents) == 1
    assert invariant_violations(fresh_database) == []


async def test_delete_removes_chunks_vectors_and_statistics(
    ingest_client: httpx.AsyncClient, project, fresh_database: str
) -> None:
    name, key = project
    for n in ("one.txt", "two.txt"):
        await ingest_client.post(
            f"/projects/{name}/documents",
            files={"files": (n, f"Text of {n} ".encode() * 50)},
            headers=key,
        )
    documents = await wait_settled(ingest_client, key, name)
    gone = documents["one.txt"]["id"]
    assert (
        await ingest_client.delete(f"/projects/{name}/documents/{gone}", headers=key)
    ).status_code == 204
    assert (
        await ingest_client.get(f"/projects/{name}/documents/{gone}", headers=key)
    ).status_code == 404
    with psycopg.connect(fresh_database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_id = %s", (gone,)
        ).fetchone()
        vectors = conn.execute("SELECT count(*) FROM chunk_embeddings").fetchone()
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()
    assert left == (0,)
    assert vectors == chunks == (documents["two.txt"]["chunk_count"],)
    assert invariant_violations(fresh_database) == []
    again = await ingest_client.delete(f"/projects/{name}/documents/{gone}", headers=key)
    assert again.status_code == 404
    # The project with it: every chunk, vector and posting goes.
    assert (await ingest_client.delete(f"/projects/{name}", headers=key)).status_code == 204
    with psycopg.connect(fresh_database) as conn:
        for table in ("chunks", "chunk_embeddings", "chunk_terms", "lexical_stats"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


async def test_bad_uploads_are_refused_and_the_rest_of_the_batch_lands(
    ingest_client: httpx.AsyncClient, project, ingest_runtime: Runtime
) -> None:
    name, key = project
    limit = ingest_runtime.settings.max_upload_bytes
    fifty_mb = b"a" * (50 * 1024 * 1024)
    assert len(fifty_mb) > limit
    response = await ingest_client.post(
        f"/projects/{name}/documents",
        files=[
            ("files", ("good.txt", b"A perfectly good document.")),
            ("files", ("empty.txt", b"")),
            ("files", ("tool.exe", b"MZ\x90\x00")),
            ("files", ("huge.txt", fifty_mb)),
        ],
        headers=key,
    )
    assert response.status_code == 202
    body = response.json()
    assert [s["document"]["external_id"] for s in body["documents"]] == ["good.txt"]
    assert {r["name"]: r["code"] for r in body["rejected"]} == {
        "empty.txt": "empty_document",
        "tool.exe": "unsupported_format",
        "huge.txt": "document_too_large",
    }
    alone = await ingest_client.post(
        f"/projects/{name}/documents", files={"files": ("tool.exe", b"MZ")}, headers=key
    )
    assert alone.status_code == 415
    assert alone.json()["code"] == "unsupported_format"
    big = await ingest_client.post(
        f"/projects/{name}/documents", files={"files": ("big.txt", b"b" * (limit + 1))}, headers=key
    )
    assert big.status_code == 413
    mixed = await ingest_client.post(
        f"/projects/{name}/documents",
        files=[("files", ("tool.exe", b"MZ")), ("files", ("big.txt", b"b" * (limit + 1)))],
        headers=key,
    )
    assert (mixed.status_code, mixed.json()["code"]) == (422, "no_document_accepted")
    assert {r["name"]: r["code"] for r in mixed.json()["rejected"]} == {
        "tool.exe": "unsupported_format",
        "big.txt": "document_too_large",
    }
    documents = await wait_settled(ingest_client, key, name)
    assert list(documents) == ["good.txt"]


async def test_unreadable_documents_fail_at_once_into_the_dead_letter_view(
    ingest_client: httpx.AsyncClient, project
) -> None:
    name, key = project
    uploads = [
        ("files", ("corrupt.pdf", b"%PDF-1.7\n garbage garbage")),
        ("files", ("secret.pdf", files.pdf(["Classified"], password="pw"))),
        ("files", ("binary.txt", b"\x00\x01\x02" * 100)),
        ("files", ("empty.html", b"<html><body><script>x</script></body></html>")),
        ("files", ("dots.txt", b". . . --- ***")),
        ("files", ("bomb.docx", files.docx_unpacking_to(300 * 1024 * 1024))),  # 500 KB
        ("files", ("nested.json", b"[" * 100_000 + b"]" * 100_000)),
        ("files", ("fine.txt", b"This one is fine.")),
    ]
    await ingest_client.post(f"/projects/{name}/documents", files=uploads, headers=key)
    documents = await wait_settled(ingest_client, key, name)
    codes = {k: (d["status"], d["error_code"], d["attempts"]) for k, d in documents.items()}
    assert codes == {
        "corrupt.pdf": ("failed", "corrupt_document", 1),
        "secret.pdf": ("failed", "encrypted_document", 1),
        "binary.txt": ("failed", "binary_content", 1),
        "empty.html": ("failed", "empty_document", 1),
        "dots.txt": ("failed", "empty_document", 1),
        "bomb.docx": ("failed", "document_too_large", 1),
        "nested.json": ("failed", "corrupt_document", 1),
        "fine.txt": ("complete", None, 1),
    }
    assert "password" in documents["secret.pdf"]["error"]
    failed = await ingest_client.get(f"/projects/{name}/documents?status=failed", headers=key)
    assert {d["external_id"] for d in failed.json()["documents"]} == {
        "corrupt.pdf",
        "secret.pdf",
        "binary.txt",
        "empty.html",
        "dots.txt",
        "bomb.docx",
        "nested.json",
    }


async def test_transient_failures_retry_then_dead_letter_then_manual_retry(
    ingest_client: httpx.AsyncClient, project, ingest_runtime: Runtime
) -> None:
    from quarry.testing import FlakyEmbedder

    real = ingest_runtime.pipeline.embedder
    ingest_runtime.pipeline.embedder = FlakyEmbedder(real, failures=2)
    name, key = project
    await ingest_client.post(
        f"/projects/{name}/documents/text",
        json={"text": "Retried text.", "external_id": "r"},
        headers=key,
    )
    documents = await wait_settled(ingest_client, key, name)
    assert documents["r"]["status"] == "complete", documents
    assert documents["r"]["attempts"] == 3, documents

    ingest_runtime.pipeline.embedder = FlakyEmbedder(real, failures=100)
    await ingest_client.post(
        f"/projects/{name}/documents/text",
        json={"text": "Doomed text.", "external_id": "d"},
        headers=key,
    )
    documents = await wait_settled(ingest_client, key, name)
    assert documents["d"]["status"] == "failed", documents
    assert documents["d"]["error_code"] == "transient_error", documents
    assert documents["d"]["attempts"] == 3, documents  # QUARRY_INGEST_MAX_ATTEMPTS in tests

    ingest_runtime.pipeline.embedder = real
    retried = await ingest_client.post(f"/projects/{name}/documents/retry", headers=key)
    assert retried.json() == {"count": 1}, documents
    documents = await wait_settled(ingest_client, key, name)
    assert documents["d"]["status"] == "complete", documents


async def test_text_and_url_sources(ingest_client: httpx.AsyncClient, project) -> None:
    from tests.support import StaticSite

    name, key = project
    text = await ingest_client.post(
        f"/projects/{name}/documents/text",
        json={"text": "# Title\n\nBody.", "format": "md", "title": "Given"},
        headers=key,
    )
    assert text.status_code == 202
    assert text.json()["document"]["external_id"].startswith("text:")
    bad_format = await ingest_client.post(
        f"/projects/{name}/documents/text", json={"text": "x", "format": "exe"}, headers=key
    )
    assert bad_format.status_code == 415
    with StaticSite(
        {"/page": (200, files.HTML), "/slow": (200, b"late"), "/gone": (404, b"")},
        slow={"/slow": 3.0},
    ) as site:
        page = await ingest_client.post(
            f"/projects/{name}/documents/url", json={"url": f"{site}/page"}, headers=key
        )
        assert page.status_code == 202, page.text
        missing = await ingest_client.post(
            f"/projects/{name}/documents/url", json={"url": f"{site}/gone"}, headers=key
        )
        assert missing.status_code == 422
        assert missing.json()["code"] == "url_fetch_failed"
        assert "404" in missing.json()["detail"]
        slow = await ingest_client.post(
            f"/projects/{name}/documents/url", json={"url": f"{site}/slow"}, headers=key
        )
        assert slow.status_code == 422
        assert slow.json()["code"] == "url_timeout"
    metadata = await ingest_client.post(
        f"/projects/{name}/documents/url",
        json={"url": "http://169.254.169.254/latest/meta-data/"},
        headers=key,
    )
    assert metadata.status_code == 422
    assert metadata.json()["code"] == "url_not_allowed"
    not_http = await ingest_client.post(
        f"/projects/{name}/documents/url", json={"url": "file:///etc/passwd"}, headers=key
    )
    assert not_http.status_code == 422
    documents = await wait_settled(ingest_client, key, name)
    url_doc = documents[f"{site}/page"]
    assert url_doc["status"] == "complete"
    assert url_doc["format"] == "html"


async def test_many_texts_in_one_request_each_accepted_or_refused_on_its_own(
    ingest_client: httpx.AsyncClient, project, fresh_database: str
) -> None:
    name, key = project
    url = f"/projects/{name}/documents/texts"
    tide = {"text": "Tides follow the moon.", "external_id": "tide", "title": "Tides"}
    answer = await ingest_client.post(
        url,
        json={
            "documents": [
                tide,
                {"text": "x", "format": "exe", "external_id": "tool"},
                {"text": "# Wind\n\nWind turns turbines.", "format": "md"},
                {"text": " "},  # stored, then found to hold no words: fails in its job
                tide,  # again: unchanged
            ]
        },
        headers=key,
    )
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    assert [(s["document"]["external_id"][:5], s["outcome"]) for s in batch["documents"]] == [
        ("tide", "created"),
        ("text:", "created"),
        ("text:", "created"),
        ("tide", "unchanged"),
    ]
    assert batch["rejected"] == [
        {"name": "tool", "code": "unsupported_format", "detail": batch["rejected"][0]["detail"]}
    ]
    all_refused = await ingest_client.post(
        url, json={"documents": [{"text": "x", "format": "exe"}]}, headers=key
    )
    assert all_refused.status_code == 415
    assert [r["name"] for r in all_refused.json()["rejected"]] == ["documents.0"]
    # A request invalid as a whole stores nothing.
    for body, field in [
        ({"documents": []}, "documents"),
        ({"documents": [{"text": "fine"}] * 1001}, "documents"),
        ({"documents": [{"text": "fine"}, {"title": "no text"}]}, "documents.1.text"),
        ({"documents": [{"text": "fine"}, {"text": "a\x00b"}]}, "documents.1.text"),
    ]:
        bad = await ingest_client.post(url, json=body, headers=key)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == field
    documents = await wait_settled(ingest_client, key, name)
    assert len(documents) == 3
    assert documents["tide"]["status"] == "complete"
    assert sorted(d["status"] for d in documents.values()) == ["complete", "complete", "failed"]
    assert invariant_violations(fresh_database) == []


async def test_reindex_moves_every_vector_to_the_new_model(
    ingest_client: httpx.AsyncClient, project, ingest_runtime: Runtime, fresh_database: str
) -> None:
    from quarry.testing import HashEmbedder

    name, key = project
    for i in range(3):
        await ingest_client.post(
            f"/projects/{name}/documents/text", json={"text": f"Document {i}. " * 40}, headers=key
        )
    await wait_settled(ingest_client, key, name)
    ingest_runtime.pipeline.embedder = HashEmbedder(model_id="test/other-model")
    queued = await ingest_client.post(f"/projects/{name}/reindex", headers=key)
    assert queued.json() == {"count": 3}
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(fresh_database) as conn:
            models = dict(
                conn.execute(
                    "SELECT model, count(*) FROM chunk_embeddings GROUP BY model"
                ).fetchall()
            )
            chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        if models == {"test/other-model": chunks}:
            break
        assert time.monotonic() < deadline, models
        await asyncio.sleep(0.1)


async def test_documents_of_another_project_are_not_found(
    ingest_client: httpx.AsyncClient, project, admin: NewUser
) -> None:
    name, key = project
    made = await ingest_client.post(
        f"/projects/{name}/documents/text", json={"text": "Private."}, headers=key
    )
    doc_id = made.json()["document"]["id"]
    await ingest_client.post("/projects", json={"name": "other"}, headers=key)
    assert (
        await ingest_client.get(f"/projects/other/documents/{doc_id}", headers=key)
    ).status_code == 404
    assert (
        await ingest_client.get(f"/projects/{name}/documents/{uuid.uuid4()}", headers=key)
    ).status_code == 404
    assert (
        await ingest_client.get(f"/projects/{name}/documents/not-a-uuid", headers=key)
    ).status_code == 422
    bad_cursor = await ingest_client.get(f"/projects/{name}/documents?before=zzz", headers=key)
    assert bad_cursor.status_code == 422
    bad_meta = await ingest_client.post(
        f"/projects/{name}/documents",
        files={"files": ("a.txt", b"x")},
        data={"metadata": "[1]"},
        headers=key,
    )
    assert bad_meta.status_code == 422
    assert bad_meta.json()["field"] == "metadata"


async def test_values_postgres_cannot_hold_are_refused_before_they_reach_it(
    ingest_client: httpx.AsyncClient, project, fresh_database: str
) -> None:
    """Postgres text and jsonb cannot hold NUL, lone surrogates, NaN or Infinity: each place
    one could arrive is a 422 naming it, and nothing is stored."""
    name, key = project
    attempts = [
        ("/documents/text", {"text": "fine", "title": "a\x00b"}),
        ("/documents/text", {"text": "fine", "metadata": {"k": "v\x00"}}),
        ("/documents/text", {"text": "fine", "metadata": {"k\x00": 1}}),
        ("/documents/text", {"text": "fine", "tags": ["t\x00"]}),
        ("/documents/text", {"text": "fine", "external_id": "x\x00"}),
        ("/documents/url", {"url": "http://127.0.0.1:9/x", "title": "\x00"}),
    ]
    for path, body in attempts:
        answer = await ingest_client.post(f"/projects/{name}{path}", json=body, headers=key)
        assert answer.status_code == 422, (body, answer.text)
    for metadata, field in [
        ('{"k": "\\u0000"}', "metadata.k"),
        ('{"k": [1, NaN]}', "metadata.k.1"),
        ('{"k": 1e400}', "metadata.k"),
        ('{"k": {"\\ud800": 1}}', "metadata.k"),
    ]:
        upload = await ingest_client.post(
            f"/projects/{name}/documents",
            files={"files": ("a.txt", b"fine", "text/plain")},
            data={"metadata": metadata},
            headers=key,
        )
        assert upload.status_code == 422, upload.text
        assert upload.json()["field"] == field
    # JSON bodies as a client may write them (httpx's encoder refuses NaN and surrogates).
    for body, field in [
        ('{"text": "fine", "metadata": {"k": NaN}}', "metadata.k"),
        ('{"text": "fine", "metadata": {"k": [-Infinity]}}', "metadata.k.0"),
        ('{"text": "fine \\udc00"}', "text"),
        ('{"text": "fine", "tags": ["\\ud800"]}', "tags.0"),
    ]:
        answer = await ingest_client.post(
            f"/projects/{name}/documents/text",
            content=body,
            headers={**key, "content-type": "application/json"},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == field
    created = await ingest_client.post(
        "/projects", json={"name": "nul", "description": "\x00"}, headers=key
    )
    assert created.status_code == 422
    # Index keys Postgres bounds in bytes, metadata too deep to read back, form metadata
    # Python's JSON parser cannot take: a 422 naming the field, wherever they arrive.
    deep: object = "leaf"
    for _ in range(300):
        deep = [deep]
    for body, field in [
        ({"text": "fine", "external_id": "\u6587" * 1000}, "external_id"),  # 3,000 bytes
        ({"text": "fine", "tags": ["\u6587" * 1000]}, "tags.0"),
        ({"text": "fine", "tags": ["t" * 20_000]}, "tags.0"),
        ({"text": "fine", "metadata": {"k": deep}}, "metadata.k"),
    ]:
        answer = await ingest_client.post(
            f"/projects/{name}/documents/text", json=body, headers=key
        )
        assert answer.status_code == 422, answer.text
        assert field in answer.text
        many = await ingest_client.post(
            f"/projects/{name}/documents/texts", json={"documents": [body]}, headers=key
        )
        assert many.status_code == 422, many.text
    for form, field in [
        ({"metadata": '{"a":' * 5000 + "1" + "}" * 5000}, "metadata"),
        ({"metadata": '{"a": ' + "9" * 5000 + "}"}, "metadata"),
        ({"metadata": json.dumps({"k": deep})}, "metadata.k"),
        # Refused per file, by the reason: a tag and the external id are a file's own.
        ({"tags": "\u6587" * 1000}, "a tag is longer"),
        ({"external_id": "\u6587" * 1000}, "external_id is longer"),
    ]:
        upload = await ingest_client.post(
            f"/projects/{name}/documents",
            files={"files": ("a.txt", b"fine", "text/plain")},
            data=form,
            headers=key,
        )
        assert upload.status_code == 422, upload.text
        assert field in upload.text
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
