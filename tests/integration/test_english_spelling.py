# ruff: noqa: RUF001 (Greek letters are what these tests are about)
"""The `english` analyzer makes spellings one: Greek letters and their names, British words
and their American forms (migration 0016). Other analyzers read text as it is."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from quarry.answers.context import Budget, ContextBuilder
from quarry.db import migrate
from quarry.search.models import SearchResponse
from quarry.tenancy.users import NewUser
from tests.conftest import bearer
from tests.integration.test_ingest import invariant_violations, wait_settled

SPELLINGS = [
    # Greek letters, in either case, and the micro sign
    ("TNF-α and IL-1β bind αvβ3", "tnf-alpha and il-1beta bind alphavbeta3"),
    ("ΔF508, NF-κB, 5 µM, 5 μM", "deltaf508, nf-kappab, 5 microm, 5 microm"),
    # British spellings, in any case, inside longer words too
    ("Tumours, antitumour; Behavioural", "tumors, antitumor; behavioral"),
    ("Haemoglobin, anaemia, ischaemic", "hemoglobin, anemia, ischemic"),
    ("paediatric oedema; foetal; Oestrogen", "pediatric edema; fetal; estrogen"),
    ("gastro-oesophageal, gastrooesophageal", "gastro-esophageal, gastroesophageal"),
    ("randomised, organisation, hospitalisations", "randomized, organization, hospitalizations"),
    ("analysed, catalysing", "analyzed, catalyzing"),
    ("centre, centres, centred, fibre, titre", "center, centers, centered, fiber, titer"),
    ("sulphate, analogues, programme, defence", "sulfate, analogs, program, defense"),
    ("grey mould, aluminium, practised", "gray mold, aluminum, practiced"),
    ("manoeuvre, manoeuvred, manoeuvring", "maneuver, maneuvered, maneuvering"),
    ("amortisation", "amortization"),
    # left alone: American -ise words, what only looks British, and what is American already
    ("exercise, unsupervised, precise, promising", "exercise, unsupervised, precise, promising"),
    ("stepwise, otherwise, arising, raised", "stepwise, otherwise, arising, raised"),
    ("gastroesophageal, extraembryonic, proestrus", "gastroesophageal, extraembryonic, proestrus"),
    ("pemetrexed, analyses, programmed, lysed", "pemetrexed, analyses, programmed, lysed"),
    ("tumor, hemoglobin, randomized", "tumor, hemoglobin, randomized"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "read"), SPELLINGS)
def test_english_spelling(fresh_database: str, text: str, read: str) -> None:
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT english_spelling(%s)", (text,)).fetchone()
    assert row == (read,)


def test_only_english_makes_spellings_one(fresh_database: str) -> None:
    with psycopg.connect(fresh_database) as conn:

        def terms(analyzer: str, text: str) -> list[str]:
            row = conn.execute(
                "SELECT array(SELECT lexeme FROM unnest(search_terms(%s::regconfig, %s)))",
                (analyzer, text),
            ).fetchone()
            assert row is not None
            return sorted(row[0])

        assert terms("english", "tumour") == terms("english", "tumors") == ["tumor"]
        assert terms("english", "β-cells") == terms("english", "beta-cells")
        assert terms("english", "β-cells") != terms("english", "cells")
        assert terms("simple", "tumour") == ["tumour"]
        assert terms("simple", "α") == ["α"]
        assert terms("german", "Tumour") == ["tumour"]
        assert conn.execute("SELECT search_terms('english', NULL)").fetchone() == (None,)


async def test_a_query_finds_the_other_spelling_and_highlights_its_own(
    ingest_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    documents = {
        "british": "Tumour growth slowed in treated mice.",
        "greek": "TNF-α signalling drives the inflammation.",
        "other": "Bread rises slowly overnight.",
    }
    for analyzer in ("english", "simple"):
        made = await ingest_client.post(
            "/projects", json={"name": analyzer, "analyzer": analyzer}, headers=key
        )
        assert made.status_code == 201, made.text
        for external_id, text in documents.items():
            sent = await ingest_client.post(
                f"/projects/{analyzer}/documents/text",
                json={"text": text, "external_id": external_id},
                headers=key,
            )
            assert sent.status_code == 202, sent.text
        await wait_settled(ingest_client, key, analyzer)

    async def bm25(project: str, query: str) -> dict:
        answer = await ingest_client.post(
            f"/projects/{project}/search", json={"query": query, "mode": "bm25"}, headers=key
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    for query in ("tumor", "tumors", "Tumour"):
        hits = (await bm25("english", query))["hits"]
        assert [h["external_id"] for h in hits] == ["british"], query
    for query in ("alpha", "α", "TNF-alpha"):
        hits = (await bm25("english", query))["hits"]
        assert [h["external_id"] for h in hits] == ["greek"], query
    found = await bm25("english", "tumor growth")
    assert found["search_metadata"]["query_terms"] == ["tumor", "growth"]
    # The stored text keeps its spelling. A highlight marks the words as the query spells
    # them (ts_headline reads the text as it is), so the other spelling goes unmarked.
    assert found["hits"][0]["highlight"] == "Tumour <mark>growth</mark> slowed in treated mice"
    written = await bm25("english", "tumour")
    assert written["search_metadata"]["query_terms"] == ["tumor"]
    # what highlights (and answers cutting a long passage) match the stored text by
    assert written["search_metadata"]["highlight_terms"] == ["tumor", "tumour"]
    assert found["search_metadata"]["highlight_terms"] == ["tumor", "growth"]
    assert written["hits"][0]["highlight"].startswith("<mark>Tumour</mark> growth")
    assert "<mark>α</mark>" in (await bm25("english", "α"))["hits"][0]["highlight"]
    # Answers cut a long chunk to the sentences that match the terms highlights mark: the
    # stored text keeps its spelling, so the analysed terms alone match neither spelling of
    # the other kind (haemoglobin against hemoglobin).
    long_text = (
        "Rivers flow to the sea. Wheat grows in fields. Haemoglobin falls in anaemia. "
        "Snow melts in spring. Leaves fall in autumn. Bread rises in the oven."
    )
    sent = await ingest_client.post(
        "/projects/english/documents/text",
        json={"text": long_text, "external_id": "long"},
        headers=key,
    )
    assert sent.status_code == 202, sent.text
    await wait_settled(ingest_client, key, "english")
    response = SearchResponse.model_validate(await bm25("english", "haemoglobin"))
    meta = response.search_metadata
    assert (meta.query_terms, meta.highlight_terms) == (
        ["hemoglobin"],
        ["hemoglobin", "haemoglobin"],
    )
    cutter = ContextBuilder(lambda text: len(text) // 4, passage_tokens=16)
    [passage] = cutter.build(response.hits, Budget(), query_terms=meta.highlight_terms).passages
    assert passage.text == "… Haemoglobin falls in anaemia. …"
    [whole] = cutter.build(response.hits, Budget(), query_terms=meta.query_terms).passages
    assert whole.text == long_text  # matching nothing, it would not be cut
    # another analyzer reads the text as it is
    assert (await bm25("simple", "tumor"))["hits"] == []
    assert [h["external_id"] for h in (await bm25("simple", "tumour"))["hits"]] == ["british"]


def test_migration_0016_reanalyses_english_projects(fresh_database: str) -> None:
    """Postings written before 0016 (the text analysed as it is), rows and packed blocks, are
    replaced by the new analysis in `english` projects; other projects keep theirs."""
    (spelling,) = [m for m in migrate.discover() if m.version == 16]
    texts = ["Tumour cells in anaemia", "TNF-α signalling", "Plain words only"]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        user = conn.execute("INSERT INTO users (name) VALUES ('u') RETURNING id").fetchone()
        assert user is not None
        projects = {}
        for analyzer in ("english", "simple"):
            row = conn.execute(
                "INSERT INTO projects (name, created_by, analyzer)"
                " VALUES (%s, %s, %s::regconfig) RETURNING id",
                (analyzer, user[0], analyzer),
            ).fetchone()
            assert row is not None
            projects[analyzer] = row[0]
            for n, text in enumerate(texts):
                conn.execute(
                    """
                    WITH d AS (
                        INSERT INTO documents (project_id, external_id, source_kind, source,
                                               title, format, content_hash, size_bytes, status,
                                               chunk_count)
                        VALUES (%(p)s, %(n)s, 'text', 't', '', 'txt', md5(%(t)s),
                                length(%(t)s), 'complete', 1)
                        RETURNING id
                    ), c AS (
                        INSERT INTO chunks (project_id, document_id, chunk_index, text,
                                            char_start, char_end, token_count, content_hash,
                                            term_count)
                        SELECT %(p)s, d.id, 0, %(t)s, 0, length(%(t)s), 0,
                               sha256(convert_to(%(t)s, 'UTF8')),
                               term_count(to_tsvector(%(a)s::regconfig, %(t)s))
                        FROM d
                        RETURNING id, term_count
                    )
                    INSERT INTO chunk_terms (project_id, term, chunk_id, tf, chunk_terms)
                    SELECT %(p)s, t.term, c.id, t.tf, c.term_count
                    FROM c CROSS JOIN LATERAL postings(to_tsvector(%(a)s::regconfig, %(t)s)) t
                    """,
                    {"p": row[0], "n": str(n), "t": text, "a": analyzer},
                )
            conn.execute(
                "UPDATE documents d SET term_count = (SELECT sum(c.term_count) FROM chunks c"
                " WHERE c.document_id = d.id) WHERE d.project_id = %s",
                (row[0],),
            )
            conn.execute(
                "INSERT INTO lexical_stats (project_id, chunk_count, term_count)"
                " SELECT %s, count(*), sum(term_count) FROM chunks WHERE project_id = %s",
                (row[0], row[0]),
            )
        # as a pack leaves them: the english project's postings of one term in a block
        english = projects["english"]
        conn.execute(
            """
            WITH moved AS (
                DELETE FROM chunk_terms WHERE project_id = %(p)s AND term = 'tumour'
                RETURNING chunk_id, tf, chunk_terms
            )
            INSERT INTO term_blocks (project_id, term, first_chunk, last_chunk, postings,
                                     chunk_ids, shapes)
            SELECT %(p)s, 'tumour', min(chunk_id), max(chunk_id), count(*),
                   string_agg(int8send(chunk_id), ''::bytea),
                   string_agg(int8send((chunk_terms::int8 << 32) | tf), ''::bytea)
            FROM moved
            """,
            {"p": english},
        )

        def postings(project: object) -> set[tuple[int, str, int]]:
            rows = conn.execute(
                "SELECT chunk_id, term, tf FROM chunk_terms WHERE project_id = %s", (project,)
            )
            return set(rows.fetchall())

        def expected(project: object, analyzer: str) -> set[tuple[int, str, int]]:
            rows = conn.execute(
                "SELECT c.id, t.term, t.tf FROM chunks c CROSS JOIN LATERAL"
                " postings(search_terms(%s::regconfig, indexed_text(c.context, c.text))) t"
                " WHERE c.project_id = %s",
                (analyzer, project),
            )
            return set(rows.fetchall())

        simple_before = postings(projects["simple"])
        assert postings(english) != expected(english, "english")
        conn.execute(spelling.sql)
        assert postings(english) == expected(english, "english")
        assert {term for _, term, _ in postings(english)} >= {"tumor", "anemia", "alpha"}
        assert conn.execute(
            "SELECT count(*) FROM term_blocks WHERE project_id = %s", (english,)
        ).fetchone() == (0,)
        stats = conn.execute(
            "SELECT chunk_count, chunks_since_pack FROM lexical_stats WHERE project_id = %s",
            (english,),
        ).fetchone()
        assert stats == (3, 3)  # every chunk counts towards the next pack
        assert postings(projects["simple"]) == simple_before
    # (the chunks were written without vectors: only the lexical invariants apply)
    assert invariant_violations(fresh_database) == ["chunk without embedding"]
