"""Search over the API: modes, hits, filters, bad input, and the vector index it relies on."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg
import pytest

from quarry.runtime import Runtime
from quarry.tenancy.users import NewUser
from tests.conftest import bearer
from tests.integration.test_ingest import wait_settled

DOCUMENTS = [
    {
        "external_id": "solar",
        "title": "Solar power",
        "text": "Photovoltaic panels convert sunlight into electricity. Solar farms need land.",
        "metadata": {"year": 2021, "kind": "energy", "lang": "en", "ratings": [3, 5]},
        "tags": ["energy", "renewable"],
    },
    {
        "external_id": "wind",
        "title": "Wind turbines",
        "text": "Turbines turn wind into electricity; offshore wind farms are growing fast.",
        "metadata": {"year": 2019, "kind": "energy", "lang": "en"},
        "tags": ["energy", "renewable"],
    },
    {
        "external_id": "bread",
        "title": "Sourdough",
        "text": "A sourdough starter ferments flour and water; the bread rises slowly overnight.",
        "metadata": {"year": 2023, "kind": "food", "lang": "en"},
        "tags": ["food"],
    },
    {
        "external_id": "coal",
        "title": "Coal plants",
        "text": "Coal plants burn coal to make electricity and emit carbon dioxide.",
        "metadata": {"year": 2015, "kind": "energy", "lang": "fr"},
        "tags": ["energy"],
    },
]


@pytest.fixture
async def corpus(ingest_client: httpx.AsyncClient, admin: NewUser) -> tuple[str, dict]:
    key = bearer(admin.api_key.secret)
    made = await ingest_client.post("/projects", json={"name": "search"}, headers=key)
    assert made.status_code == 201
    for doc in DOCUMENTS:
        sent = await ingest_client.post(
            "/projects/search/documents/text", json={**doc, "format": "txt"}, headers=key
        )
        assert sent.status_code == 202, sent.text
    documents = await wait_settled(ingest_client, key, "search")
    assert all(d["status"] == "complete" for d in documents.values()), documents
    return "search", key


async def _search(client: httpx.AsyncClient, key: dict, project: str, **body) -> httpx.Response:
    return await client.post(f"/projects/{project}/search", json=body, headers=key)


async def _post_json(
    client: httpx.AsyncClient, url: str, body: object, key: dict
) -> httpx.Response:
    """A body as Python's json writes it: NaN, Infinity and lone surrogates escaped, which a
    client may send and httpx's own encoder refuses."""
    headers = {**key, "content-type": "application/json"}
    return await client.post(url, content=json.dumps(body), headers=headers)


async def test_each_mode_finds_the_matching_document(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    project, key = corpus
    for mode in ("bm25", "vector", "hybrid"):
        answer = await _search(ingest_client, key, project, query="wind turbines", mode=mode)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        top = body["hits"][0]
        assert top["external_id"] == "wind", (mode, body)
        meta = body["search_metadata"]
        assert meta["mode"] == mode
        # By default only hybrid has the rerank stage (late interaction, blended).
        assert meta["reranked"] is (mode == "hybrid")
        assert meta["query_terms"] == ["wind", "turbin"]
        assert meta["documents_indexing"] == 0
        assert set(meta["timings_ms"]) >= {"prepare", "fuse", "hits", "total"}
        assert ("rerank" in meta["timings_ms"]) is (mode == "hybrid")
        expected = {"bm25": {"bm25"}, "vector": {"vector"}, "hybrid": {"bm25", "vector"}}[mode]
        assert set(meta["candidates"]) == expected
        assert set(top["ranks"]) - {"fused"} <= expected
        assert top["ranks"]
        scores = [hit["score"] for hit in body["hits"]]
        assert scores == sorted(scores, reverse=True)


async def test_a_hit_carries_its_place_and_a_highlight(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    project, key = corpus
    body = (await _search(ingest_client, key, project, query="sourdough bread", k=1)).json()
    (hit,) = body["hits"]
    assert hit["document_title"] == "Sourdough"
    assert isinstance(hit["chunk_id"], int)
    assert hit["chunk_index"] == 0
    assert hit["char_start"] == 0
    assert hit["char_end"] > 0
    assert hit["page"] is None
    assert "<mark>sourdough</mark>" in hit["highlight"]
    assert "<mark>bread</mark>" in hit["highlight"]
    assert hit["ranks"]["bm25"] == 1
    assert hit["ranks"]["vector"] == 1
    assert hit["scores"]["bm25"] > 0
    assert 0 < hit["scores"]["vector"] <= 1


async def test_a_highlight_is_html_with_the_documents_own_markup_escaped(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    project, key = corpus
    text = 'Kites <img src=x onerror="alert(1)"> fly & soar; see <b>kites</b> \ue000here.'
    sent = await ingest_client.post(
        f"/projects/{project}/documents/text",
        json={"text": text, "external_id": "kites", "format": "txt"},
        headers=key,
    )
    assert sent.status_code == 202, sent.text
    await wait_settled(ingest_client, key, project)
    for query in ("kites", "how do I"):  # terms to mark; only stop words (the text's start)
        body = (await _search(ingest_client, key, project, query=query, k=10)).json()
        [hit] = [h for h in body["hits"] if h["external_id"] == "kites"]  # 5 documents, k 10
        highlight = hit["highlight"]
        assert "<img" not in highlight
        assert "<b>" not in highlight
        assert highlight.replace("<mark>", "").replace("</mark>", "").count("<") == 0
        if query == "kites":  # the document's own U+E000 cannot pass for a mark
            assert "<mark>Kites</mark>" in highlight
            assert "&amp;" in highlight
            assert "\ue000" not in highlight


async def test_a_page_skips_chunks_deleted_since_retrieval(
    ingest_client: httpx.AsyncClient, ingest_runtime: Runtime, corpus
) -> None:
    from quarry.search.fusion import Fused

    project, key = corpus
    documents = await wait_settled(ingest_client, key, project)
    project_id = uuid.UUID(
        (await ingest_client.get(f"/projects/{project}", headers=key)).json()["id"]
    )
    fused = []
    for name in ("solar", "wind", "coal"):
        document = documents[name]["id"]
        [chunk] = (
            await ingest_client.get(f"/projects/{project}/documents/{document}/chunks", headers=key)
        ).json()
        fused.append(Fused(chunk["id"], uuid.UUID(document), 1.0))
    gone = Fused(10**12, uuid.uuid4(), 1.0)  # a chunk deleted between retrieval and the page
    hits = await ingest_runtime.search._page(project_id, "english", [], [gone, *fused], k=3)
    assert [h.external_id for h in hits] == ["solar", "wind", "coal"]


async def test_a_page_per_document_holds_k_documents_when_a_long_one_fills_the_candidates(
    ingest_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    made = await ingest_client.post("/projects", json={"name": "manuals"}, headers=key)
    assert made.status_code == 201
    long_text = "\n\n".join(
        f"Section {i}. Turbine maintenance: check the turbine blades and the turbine gearbox "
        "for wear, and log what the turbine inspection found. " * 4
        for i in range(20)
    )
    texts = {"manual": long_text} | {
        f"note{i}": f"Note {i}: the turbine was serviced in spring." for i in range(4)
    }
    for name, text in texts.items():
        sent = await ingest_client.post(
            "/projects/manuals/documents/text",
            json={"text": text, "external_id": name, "format": "txt"},
            headers=key,
        )
        assert sent.status_code == 202, sent.text
    documents = await wait_settled(ingest_client, key, "manuals")
    chunks = await ingest_client.get(
        f"/projects/manuals/documents/{documents['manual']['id']}/chunks", headers=key
    )
    assert len(chunks.json()) > 5  # the manual alone fills five candidates
    for mode in ("bm25", "hybrid"):
        body = (
            await _search(
                ingest_client,
                key,
                "manuals",
                query="turbine gearbox blades inspection",
                mode=mode,
                per_document=True,
                k=5,
                candidates=5,
            )
        ).json()
        assert sorted(h["external_id"] for h in body["hits"]) == sorted(texts), (mode, body)
        assert body["hits"][0]["external_id"] == "manual"
        scores = [h["score"] for h in body["hits"]]
        assert scores == sorted(scores, reverse=True)
        # BM25's five best chunks are all the manual's: it reads deeper for the other four.
        # (Hybrid's vector side already brings the notes.)
        assert ("widen" in body["search_metadata"]["timings_ms"]) is (mode == "bm25")


async def test_filters_narrow_every_retriever(ingest_client: httpx.AsyncClient, corpus) -> None:
    project, key = corpus
    documents = await wait_settled(ingest_client, key, project)

    async def found(filters: dict, mode: str = "hybrid") -> set[str]:
        answer = await _search(
            ingest_client, key, project, query="electricity", mode=mode, filters=filters, k=10
        )
        assert answer.status_code == 200, answer.text
        return {hit["external_id"] for hit in answer.json()["hits"]}

    for mode in ("bm25", "vector", "hybrid"):
        assert await found({"metadata": {"kind": "energy"}}, mode) == {"solar", "wind", "coal"}
    assert await found({"metadata": {"year": {"gte": 2019, "lt": 2023}}}) == {"solar", "wind"}
    assert await found({"metadata": {"lang": {"in": ["fr"]}}}) == {"coal"}
    assert await found({"metadata": {"year": {"gt": 2020}}}, "vector") == {"solar", "bread"}
    assert await found({"tags": ["renewable"]}) == {"solar", "wind"}
    assert await found({"tags": ["energy", "renewable"], "metadata": {"year": 2019}}) == {"wind"}
    ids = [documents["coal"]["id"], documents["bread"]["id"]]
    assert await found({"document_ids": ids}, "vector") == {"coal", "bread"}
    assert await found({"created_after": "2000-01-01T00:00:00Z"}) == set(documents)
    assert await found({"created_before": "2000-01-01T00:00:00Z"}) == set()
    # Offsets past Postgres' 15:59 are ISO 8601 all the same: the instant counts.
    assert await found({"created_after": "2000-01-01T00:00:00-23:20"}) == set(documents)
    assert await found({"updated_before": "2000-01-01T00:00:00+23:59"}) == set()
    assert await found({"created_after": "2000-01-01T00:00:00"}) == set(documents)  # UTC
    # A metadata value of another type leaves the document out instead of failing; an array
    # is another type for every condition alike (a range looked inside it, equality did not).
    assert await found({"metadata": {"kind": {"gte": 5}}}) == set()
    assert await found({"metadata": {"ratings": {"gte": 4}}}) == set()
    assert await found({"metadata": {"ratings": 5}}) == set()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "body"),
        ({"query": "x" * 10_000}, "query"),
        ({"query": "solar", "k": 0}, "k"),
        ({"query": "solar", "k": 10_000}, "k"),
        ({"query": "solar", "mode": "fuzzy"}, "mode"),
        ({"query": "solar", "filters": {"author": "x"}}, "author"),
        ({"query": "solar", "filters": {"metadata": {"year": {}}}}, "year"),
        ({"query": "solar", "filters": {"metadata": {"bad key!": 1}}}, "bad key!"),
        ({"query": "solar", "filters": {"document_ids": ["not-a-uuid"]}}, "document_ids"),
        ({"query": "solar", "filters": {"created_after": "yesterday"}}, "created_after"),
        ({"query": "solar", "filters": {"created_after": 1700000000}}, "created_after"),
        # Outside years 1-9999 once in UTC: Postgres would take it, Python not read it back.
        (
            {"query": "solar", "filters": {"created_after": "0001-01-01T00:00:00+01:00"}},
            "filters.created_after",
        ),
        (
            {"query": "solar", "filters": {"updated_before": "9999-12-31T23:59:59-01:00"}},
            "filters.updated_before",
        ),
        # Values jsonb cannot hold, wherever they hide.
        ({"query": "solar", "filters": {"metadata": {"year": float("nan")}}}, "metadata.year"),
        (
            {"query": "solar", "filters": {"metadata": {"year": {"gte": float("inf")}}}},
            "filters.metadata.year.gte",
        ),
        (
            {"query": "solar", "filters": {"metadata": {"lang": {"in": ["fr", "\ud800"]}}}},
            "filters.metadata.lang.in.1",
        ),
        # Every value is a condition of the statement: bounded in all, not only per list.
        (
            {
                "query": "solar",
                "filters": {"metadata": {f"k{n}": {"in": list(range(100))} for n in range(11)}},
            },
            "filters",
        ),
        ({"query": "solar", "filters": {"metadata": {f"k{n}": n for n in range(65)}}}, "metadata"),
        ({"query": "solar", "filters": {"metadata": {"lang": "x" * 4097}}}, "metadata.lang"),
        ({"query": "solar \ud800"}, "query"),
        ({"query": "solar", "candidates": 5000}, "candidates"),
        ({"query": "solar", "unknown": 1}, "unknown"),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    ingest_client: httpx.AsyncClient, corpus, body: dict, field: str
) -> None:
    project, key = corpus
    answer = await _post_json(ingest_client, f"/projects/{project}/search", body, key)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_error"
    assert field in answer.text


async def test_a_query_of_stop_words_only_has_no_lexical_hits(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    project, key = corpus
    bm25 = (await _search(ingest_client, key, project, query="the of and", mode="bm25")).json()
    assert bm25["hits"] == []
    assert bm25["search_metadata"]["query_terms"] == []
    hybrid = (await _search(ingest_client, key, project, query="the of and")).json()
    assert hybrid["search_metadata"]["candidates"] == {"vector": 4}
    assert len(hybrid["hits"]) == 4
    # Only the vector retriever found them ("fused" is their rank before the rerank stage).
    assert all(set(hit["ranks"]) - {"fused"} == {"vector"} for hit in hybrid["hits"])


async def test_a_project_with_no_documents_answers_empty(
    ingest_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    await ingest_client.post("/projects", json={"name": "empty"}, headers=key)
    for mode in ("bm25", "vector", "hybrid"):
        answer = await _search(ingest_client, key, "empty", query="anything", mode=mode)
        assert answer.status_code == 200, answer.text
        assert answer.json()["hits"] == []


async def test_documents_still_indexing_are_counted_not_returned(
    ingest_runtime: Runtime, admin_principal
) -> None:
    """No worker runs here: the submitted document stays pending."""
    from quarry.ingest.documents import text_source
    from quarry.search.models import SearchRequest

    project = await ingest_runtime.projects.create(admin_principal, "pending")
    await ingest_runtime.documents.submit(
        project.id,
        text_source("Tidal energy.", external_id="t", title="", fmt="txt", metadata={}, tags=()),
    )
    response = await ingest_runtime.search.search(project.id, SearchRequest(query="tidal energy"))
    assert response.hits == []
    assert response.search_metadata.documents_indexing == 1


async def test_another_users_project_is_not_found_and_a_viewer_may_search(
    ingest_client: httpx.AsyncClient, corpus, ingest_runtime: Runtime, admin_principal
) -> None:
    project, key = corpus
    other = await ingest_runtime.users.create(admin_principal, "other")
    other_key = bearer(other.api_key.secret)
    hidden = await _search(ingest_client, other_key, project, query="solar")
    assert hidden.status_code == 404
    added = await ingest_client.put(
        f"/projects/{project}/members/other", json={"role": "viewer"}, headers=key
    )
    assert added.status_code in (200, 201), added.text
    seen = await _search(ingest_client, other_key, project, query="solar")
    assert seen.status_code == 200
    assert seen.json()["hits"][0]["external_id"] == "solar"


async def test_per_document_keeps_each_documents_best_chunk(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    project, key = corpus
    long_text = " ".join(f"Tidal lagoon note {i} about tides and turbines." for i in range(120))
    await ingest_client.post(
        f"/projects/{project}/documents/text",
        json={"text": long_text, "external_id": "tidal", "title": "Tides"},
        headers=key,
    )
    await wait_settled(ingest_client, key, project)
    many = (await _search(ingest_client, key, project, query="tidal turbines", k=20)).json()
    assert [h["external_id"] for h in many["hits"]].count("tidal") > 1
    one = await _search(
        ingest_client, key, project, query="tidal turbines", k=20, per_document=True
    )
    ids = [h["external_id"] for h in one.json()["hits"]]
    assert len(ids) == len(set(ids))
    assert ids[0] == "tidal"


async def test_vector_search_uses_the_models_hnsw_index(
    ingest_client: httpx.AsyncClient, corpus, fresh_database: str, ingest_runtime: Runtime
) -> None:
    from psycopg import sql

    from quarry.db.vector_index import index_name

    embedder = ingest_runtime.embedder
    assert embedder is not None
    name = index_name(embedder.model_id, embedder.dimensions)
    statement = ingest_runtime.db.render(
        "search.vector",
        filters=sql.SQL("TRUE"),
        dims=sql.Literal(embedder.dimensions),
        model=sql.Literal(embedder.model_id),
    )
    vector = (await embedder.embed(["solar"]))[0]
    with psycopg.connect(fresh_database) as conn:
        valid = conn.execute(
            "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE c.relname = %s",
            (name,),
        ).fetchone()
        assert valid == (True,)
        # A 4-row table: every plan is cheap, and with fresh statistics an exact scan of the
        # project's rows and a sort can cost less. Take those away, so the plan shows whether
        # the statement can use the model's partial HNSW index at all (its expression and
        # predicate match), which is what this test is about.
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        from pgvector.psycopg import register_vector

        register_vector(conn)
        project_id = conn.execute("SELECT id FROM projects WHERE name = 'search'").fetchone()[0]
        plan = conn.execute(
            sql.SQL("EXPLAIN ") + statement,
            {"project_id": project_id, "embedding": vector, "limit": 3},
        ).fetchall()
    assert name in "\n".join(row[0] for row in plan)


async def test_ef_search_is_every_connections_default_and_set_for_deeper_searches(
    ingest_client: httpx.AsyncClient, corpus, ingest_runtime: Runtime
) -> None:
    project, key = corpus
    configured = str(ingest_runtime.settings.hnsw_ef_search)
    assert ingest_runtime.search.session_ef_search == ingest_runtime.settings.hnsw_ef_search

    async def ef_search(conn) -> str:
        row = await (await conn.execute("SHOW hnsw.ef_search")).fetchone()
        return str(row["hnsw.ef_search"])

    async with ingest_runtime.db.pool.connection() as conn:
        # The session's default from the start, and what RESET returns to: a search at the
        # default depth runs its kNN without setting it.
        assert await ef_search(conn) == configured
        await conn.execute("SET hnsw.ef_search = 7")
        await conn.execute("RESET hnsw.ef_search")
        assert await ef_search(conn) == configured
    # Deeper than the default: set for that statement's transaction only.
    for depth in (300, 100, 300):
        answer = await _search(
            ingest_client, key, project, query="electricity", mode="vector", candidates=depth
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["search_metadata"]["candidates"]["vector"] == len(DOCUMENTS)
    async with ingest_runtime.db.pool.connection() as conn:
        assert await ef_search(conn) == configured


async def test_the_analyzer_is_per_project_and_changing_it_reanalyses(
    ingest_client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    from tests.integration.test_ingest import invariant_violations

    key = bearer(admin.api_key.secret)
    unknown = await ingest_client.post(
        "/projects", json={"name": "klingon", "analyzer": "klingon"}, headers=key
    )
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "analyzer"
    made = await ingest_client.post(
        "/projects", json={"name": "plain", "analyzer": "simple"}, headers=key
    )
    assert made.status_code == 201
    assert made.json()["analyzer"] == "simple"
    await ingest_client.post(
        "/projects/plain/documents/text",
        json={"text": "The runners were running the marathons.", "external_id": "r"},
        headers=key,
    )
    await wait_settled(ingest_client, key, "plain")

    async def lexical(query: str) -> tuple[list[str], int]:
        body = (await _search(ingest_client, key, "plain", query=query, mode="bm25")).json()
        return body["search_metadata"]["query_terms"], len(body["hits"])

    assert await lexical("run") == (["run"], 0)  # simple: no stemming...
    assert await lexical("the running") == (["the", "running"], 1)  # ...and no stop words
    changed = await ingest_client.patch(
        "/projects/plain", json={"analyzer": "english"}, headers=key
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["analyzer"] == "english"
    assert await lexical("run") == (["run"], 1)  # english stems running -> run
    assert await lexical("the") == ([], 0)
    assert invariant_violations(fresh_database) == []
    bad = await ingest_client.patch("/projects/plain", json={"analyzer": "nope"}, headers=key)
    assert bad.status_code == 422
    # Two changes at once: the postings follow whichever lands last, never the other. (Each
    # used to compare with the analyzer before both, so the second could skip re-analysing.)
    for _ in range(4):
        both = await asyncio.gather(
            *(
                ingest_client.patch("/projects/plain", json={"analyzer": a}, headers=key)
                for a in ("simple", "english")
            )
        )
        assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
        now = (await ingest_client.get("/projects/plain", headers=key)).json()["analyzer"]
        assert await lexical("run") == (["run"], 1 if now == "english" else 0), now


async def test_fuzzed_requests_get_an_answer_or_a_422_never_a_500(
    ingest_client: httpx.AsyncClient, corpus
) -> None:
    """Random bodies from pieces that are valid, nearly valid and hostile (NUL bytes, huge
    and non-finite numbers, lone surrogates, wrong types, unicode, timestamps at the edges of
    what Postgres and Python read), seeded so a failure reproduces."""
    import random

    project, key = corpus
    rng = random.Random(20261121)
    texts = ["solar", "", " ", "the", "a\x00b", "électricité", "'; DROP TABLE chunks; --",
             "x" * 5000, "wind & (turbine | !coal)", "\\", "日本語", "{\"a\": 1}"]  # fmt: skip
    values = [None, True, 0, -1, 2**70, 1.5e308, "2021", "energy", [], {}, ["energy"],
              {"in": []}, {"in": [1, "a"]}, {"gte": 2019}, {"gte": None}, {"lt": [1]},
              {"between": 1}, "not-a-uuid", "2024-01-01T00:00:00Z", "yesterday",
              float("nan"), float("-inf"), "\udfff", "2024-01-01T00:00:00-23:59",
              "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-01:00"]  # fmt: skip
    filter_keys = ["document_ids", "metadata", "tags", "created_after", "updated_before", "x"]

    def value(depth: int = 0) -> object:
        if depth < 2 and rng.random() < 0.3:
            key_ = rng.choice(["year", "kind", "bad key", "a.b", "", "lang"])
            return {key_: value(depth + 1)}
        return rng.choice(values)

    seen: dict[int, int] = {}
    for _ in range(150):
        body: dict[str, object] = {"query": rng.choice(texts)}
        if rng.random() < 0.5:
            body["mode"] = rng.choice(["bm25", "vector", "hybrid", "fuzzy"])
        if rng.random() < 0.4:
            body["k"] = rng.choice([1, 10, 0, -3, 200, 201, "5", None])
        if rng.random() < 0.6:
            body["filters"] = {rng.choice(filter_keys): value() for _ in range(rng.randint(0, 3))}
        if rng.random() < 0.2:
            body["fusion"] = rng.choice(["adaptive", "rrf", "borda"])
        if rng.random() < 0.2:
            body["weights"] = {"bm25": value(), "vector": rng.choice([0, 1, 0.5, 11])}
        answer = await _post_json(ingest_client, f"/projects/{project}/search", body, key)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code in (200, 422), (body, answer.text)
    assert set(seen) == {200, 422}, seen
