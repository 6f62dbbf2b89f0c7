"""A filtered BM25 search: only the chunks that pass the filter compete, scored with the whole
project's statistics (a filter narrows the candidates, it does not change how rare a term is)."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from quarry.ingest.documents import text_source
from quarry.runtime import background_worker, open_runtime
from quarry.search.filters import compile_filters
from quarry.search.models import Filters, Mode, SearchRequest
from quarry.search.postings import pack
from quarry.search.service import ALL_CHUNKS
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.support import settle

TEXTS = [
    "Solar panels turn sunlight into electricity on the roof.",
    "Wind turbines make electricity from wind; offshore farms grow.",
    "Coal plants burn coal for electricity and emit carbon.",
    "Sourdough bread rises overnight from a starter of flour and water.",
]


async def test_filtered_bm25_scores_as_the_project_does(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    async with open_runtime(ingest_settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "filtered")
        for n, text in enumerate(TEXTS):
            tags = ("fossil",) if "Coal" in text else ("renewable",)
            source = text_source(
                text, external_id=f"d{n}", title="", fmt="txt", metadata={}, tags=tags
            )
            await rt.documents.submit(project.id, source)
        async with background_worker(rt, "test"):
            await settle(rt, project.id)
        with psycopg.connect(fresh_database) as conn:
            ids = dict(conn.execute("SELECT external_id, id FROM documents").fetchall())
        prep = await rt.db.fetch_one(
            "search.prepare", project_id=project.id, query="Electricity, coal and nowhere"
        )
        assert prep is not None
        terms = prep["terms"]
        assert terms == ["electr", "coal", "nowher"]  # a term no chunk has counts for nothing
        rt.search.config = replace(rt.search.config, bm25_split_chunks=1)
        halves = rt.search.bm25_ranges(prep)
        rt.search.config = replace(rt.search.config, bm25_split_chunks=0)
        assert len(halves) == 2

        # Every posting in chunk_terms, then every one packed into blocks (one term's in
        # two, as a large project's would be): the same answers, to the last bit.
        answers = []
        for packed in (False, True):
            if packed:
                moved = await pack(rt.db, project.id, block_size=2, min_postings=1)
                assert moved.moved > 0
                with psycopg.connect(fresh_database) as conn:
                    assert conn.execute("SELECT count(*) FROM chunk_terms").fetchone() == (0,)
                rt.search.config = replace(rt.search.config, bm25_split_chunks=1)
                halves = rt.search.bm25_ranges(
                    await rt.db.fetch_one(
                        "search.prepare", project_id=project.id, query="electricity"
                    )
                )
                rt.search.config = replace(rt.search.config, bm25_split_chunks=0)
                assert len(halves) == 2
                # The list of chunks that may compete is the statement's: it travels once,
                # on the first term's row, however many terms the query has.
                compiled = compile_filters(Filters(tags=["renewable"]))
                assert compiled is not None
                rows = await rt.db.fetch_all_binary(
                    rt.db.render("search.bm25_postings", filters=compiled),
                    project_id=project.id,
                    terms=terms,
                    filtered=True,
                    first_chunk=ALL_CHUNKS[0][0],
                    last_chunk=ALL_CHUNKS[0][1],
                )
                assert [row["ord"] for row in rows] == [1, 2, 3]
                assert len(rows[0]["allowed"]) == 8 * 3  # a chunk each of d0, d1 and d3
                assert [row["allowed"] for row in rows[1:]] == [None, None]
            answers.append([])
            everything = await rt.search._bm25(project.id, terms, None, 10, ALL_CHUNKS)
            assert {c.document_id for c in everything} == {ids["d0"], ids["d1"], ids["d2"]}
            assert everything[0].document_id == ids["d2"]  # coal twice, and electricity
            score_of = {c.chunk_id: c.score for c in everything}

            for filters, kept in [
                (Filters(document_ids=[ids["d2"]]), {ids["d2"]}),
                (Filters(document_ids=[ids["d0"], ids["d3"]]), {ids["d0"]}),
                (Filters(tags=["renewable"]), {ids["d0"], ids["d1"]}),
                (Filters(tags=["nothing-has-this"]), set()),
            ]:
                compiled = compile_filters(filters)
                # Read under the filter; then the unfiltered best checked against it (every
                # scored chunk here, so always the answer): the same.
                how: dict[str, str] = {}
                narrowed = await rt.search._bm25(
                    project.id, terms, compiled, 10, ALL_CHUNKS, post_filter=False, scans=how
                )
                assert how == {"bm25": "filtered"}
                post = await rt.search._bm25(project.id, terms, compiled, 10, ALL_CHUNKS, scans=how)
                assert how == {"bm25": "post_filter"}
                assert post == narrowed, filters
                assert {c.document_id for c in narrowed} == kept, filters
                # The same scores as unfiltered: N, df and the average length are the project's.
                assert all(c.score == score_of[c.chunk_id] for c in narrowed), filters
                assert [c.score for c in narrowed] == sorted(
                    (c.score for c in narrowed), reverse=True
                )
                # Split between two connections, each counting df over its half of the chunks:
                # the same answer to the last bit.
                split = await rt.search._bm25(project.id, terms, compiled, 10, halves)
                assert split == narrowed, filters
                answers[-1].append(narrowed)
        assert answers[0] == answers[1]

        # Only the unfiltered best two checked: enough pass for one hit, not for two.
        rt.search.config = replace(rt.search.config, post_filter_depth=2)
        renewable = compile_filters(Filters(tags=["renewable"]))
        for limit, scan in ((1, "post_filter"), (2, "filtered")):
            how = {}
            run = await rt.search._bm25(project.id, terms, renewable, limit, ALL_CHUNKS, scans=how)
            assert how == {"bm25": scan}, limit
            expected = await rt.search._bm25(
                project.id, terms, renewable, limit, ALL_CHUNKS, post_filter=False
            )
            assert run == expected, limit
            assert len(run) == limit
            assert {c.document_id for c in run} <= {ids["d0"], ids["d1"]}

        # Checked in two steps: the best chunk alone first (it is d2's, which the filter
        # drops), then the rest; the answer is still the filtered read's.
        rt.search.config = replace(rt.search.config, post_filter_depth=1000, post_filter_first=1)
        how = {}
        run = await rt.search._bm25(project.id, terms, renewable, 1, ALL_CHUNKS, scans=how)
        assert how == {"bm25": "post_filter"}
        assert everything[0].document_id == ids["d2"]
        assert run == await rt.search._bm25(
            project.id, terms, renewable, 1, ALL_CHUNKS, post_filter=False
        )
        assert run[0].document_id in {ids["d0"], ids["d1"]}

        # The response says which path BM25 took: a filter by document ids is read under the
        # filter at once; any other is checked against the unfiltered best first.
        rt.search.config = replace(rt.search.config, post_filter_depth=1000, post_filter_first=3)
        for filters, scan in [
            (None, "unfiltered"),
            (Filters(tags=["renewable"]), "post_filter"),
            (Filters(document_ids=[ids["d0"]]), "filtered"),
        ]:
            request = SearchRequest(query="electricity and coal", mode=Mode.bm25, filters=filters)
            metadata = (await rt.search.search(project.id, request)).search_metadata
            assert (metadata.bm25_scan, metadata.vector_scan) == (scan, None), filters
