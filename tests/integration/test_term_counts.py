"""BM25's document frequencies learnt from earlier searches (``TermCounts``): used while the
project's lexical statistics stand, ignored once a write has changed them."""

from __future__ import annotations

import psycopg

from quarry.ingest.documents import text_source
from quarry.runtime import Runtime, background_worker, open_runtime
from quarry.search.service import Search
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.support import settle

TEXTS = [
    "Solar panels turn sunlight into electricity on the roof.",
    "Wind turbines make electricity from wind; offshore farms grow.",
    "Coal plants burn coal for electricity and emit carbon.",
    "Sourdough bread rises overnight from a starter of flour and water.",
]


async def _add(rt: Runtime, project_id, texts: list[str], first: int) -> None:
    for n, text in enumerate(texts, start=first):
        source = text_source(text, external_id=f"d{n}", title="", fmt="txt", metadata={}, tags=())
        await rt.documents.submit(project_id, source)
    async with background_worker(rt, "test"):
        await settle(rt, project_id)


def _true_dfs(database: str, project_id, terms: list[str]) -> list[int]:
    with psycopg.connect(database) as conn:
        return [
            conn.execute(
                "SELECT count(*) FROM chunk_terms WHERE project_id = %s AND term = %s",
                (project_id, term),
            ).fetchone()[0]
            for term in terms
        ]


async def test_known_dfs_are_used_while_the_statistics_stand_and_ignored_after(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    async with open_runtime(ingest_settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "dfs")
        await _add(rt, project.id, TEXTS, 0)
        prep = await rt.db.fetch_one(
            "search.prepare", project_id=project.id, query="electricity from coal and bread"
        )
        assert prep is not None
        terms = prep["terms"] + ["nowhere"]  # a term no chunk has is counted too (df 0)
        honest = await rt.search._bm25(project.id, terms, None, 10)
        assert honest

        # The first search counted every term's df and left them, with the version.
        version, known = rt.search.term_counts.known(project.id, terms)
        assert version is not None
        assert known == _true_dfs(fresh_database, project.id, terms)
        assert known[-1] == 0
        # The next search takes them instead of counting, and scores the same...
        assert await rt.search._bm25(project.id, terms, None, 10) == honest
        # ...and it does take them: wrong dfs under the current version change the scores.
        wrong = [df + 1 for df in known]
        rt.search.term_counts.learn(project.id, version, terms, wrong)
        skewed = await rt.search._bm25(project.id, terms, None, 10)
        assert [c.score for c in skewed] != [c.score for c in honest]

        # A write changes the statistics: the same wrong dfs are now ignored, every df is
        # counted again, and the scores are those of a search that never knew any.
        rt.search.term_counts.learn(project.id, version, terms, wrong)
        await _add(rt, project.id, ["Electricity prices rose as coal plants closed."], 10)
        after = await rt.search._bm25(project.id, terms, None, 10)
        unaware = Search(rt.db, None, rt.search.indexes, rt.search.config)
        assert after == await unaware._bm25(project.id, terms, None, 10)
        new_version, relearnt = rt.search.term_counts.known(project.id, terms)
        assert new_version != version
        assert relearnt == _true_dfs(fresh_database, project.id, terms)
        assert relearnt != known  # "electr" and "coal" are in one more chunk


async def test_a_filtered_search_learns_dfs_of_the_whole_project(
    ingest_settings: Settings, fresh_database: str, admin_principal
) -> None:
    """A filter narrows the candidates, not how rare a term is: what a filtered search
    leaves behind is the project's df, safe for an unfiltered one."""
    from quarry.search.filters import compile_filters
    from quarry.search.models import Filters

    async with open_runtime(ingest_settings, embedder=HashEmbedder()) as rt:
        project = await rt.projects.create(admin_principal, "filtered")
        await _add(rt, project.id, TEXTS, 0)
        terms = ["electr", "coal"]
        with psycopg.connect(fresh_database) as conn:
            coal = conn.execute("SELECT id FROM documents WHERE external_id = 'd2'").fetchone()[0]
        filters = compile_filters(Filters(document_ids=[coal]))
        hits = await rt.search._bm25(project.id, terms, filters, 10)
        assert {hit.document_id for hit in hits} == {coal}
        assert rt.search.term_counts.known(project.id, terms)[1] == _true_dfs(
            fresh_database, project.id, terms
        )
