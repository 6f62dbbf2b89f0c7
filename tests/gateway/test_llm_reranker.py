"""The LLM reranker: passages graded through the gateway's rerank role."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx2

from quarry.gateway.accounting import usage_by_model_day
from quarry.runtime import open_runtime
from quarry.search.models import SearchRequest
from quarry.search.rerank import UNGRADED, LLMReranker
from quarry.settings import Settings
from tests.gateway.support import gateway, openai_model, records
from tests.gateway.wire import Script, openai_reply, status
from tests.support import index_texts

PASSAGES = [
    "Wind turbines convert the wind's energy into electricity.",
    "The recipe needs two eggs and a cup of flour.",
    "Solar panels turn sunlight into electric power.",
    "Medieval castles were built of stone.",
]


def grader(request: httpx2.Request) -> httpx2.Response:
    """A model that grades energy passages high and the rest low."""
    passage = json.loads(request.content)["messages"][-1]["content"].split("Passage: ")[1]
    grade = 9 if ("electric" in passage) else 2 if "stone" in passage else 1
    return openai_reply(json.dumps({"relevance": grade}))(request)


async def test_grades_become_scores_and_reach_the_rerank_role() -> None:
    script = Script(grader)
    gw = gateway(openai_model(script), roles={"rerank": ["gpt"]})
    reranker = LLMReranker(gw)
    assert await reranker.score("renewable electricity", PASSAGES) == [9.0, 1.0, 9.0, 2.0]
    sent = script.requests[0]
    assert sent["response_format"]["json_schema"]["name"] == "grade"
    assert sent["temperature"] == 0
    assert "Query: renewable electricity" in sent["messages"][-1]["content"]
    assert {r.role for r in await records(gw)} == {"rerank"}
    assert await reranker.score("x", []) == []


async def test_a_passage_the_model_cannot_grade_sinks() -> None:
    def flaky(request: httpx2.Request) -> httpx2.Response:
        if "recipe" in request.content.decode():
            return status(400)(request)
        return grader(request)

    gw = gateway(openai_model(Script(flaky)), roles={"rerank": ["gpt"]})
    scores = await LLMReranker(gw).score("energy", PASSAGES)
    assert scores == [9.0, UNGRADED, 9.0, 2.0]


async def test_output_out_of_range_is_repaired_or_ungraded() -> None:
    script = Script(openai_reply('{"relevance": 42}'), openai_reply('{"relevance": 11}'))
    gw = gateway(openai_model(script), roles={"rerank": ["gpt"]})
    assert await LLMReranker(gw).score("energy", PASSAGES[:1]) == [UNGRADED]
    assert len(script.requests) == 2  # asked once more, then gave up on it


async def test_search_with_the_llm_reranker_on_the_bundled_model(
    ingest_settings: Settings, embedder, admin_principal
) -> None:
    settings = ingest_settings.model_copy(update={"reranker": "llm", "rerank_depth": 4})
    async with open_runtime(settings, embedder=embedder) as rt:
        assert isinstance(rt.search.reranker, LLMReranker)
        project = await index_texts(rt, admin_principal, "llm-rerank", PASSAGES)
        query = "electricity from sunlight or wind"
        plain = await rt.search.search(project.id, SearchRequest(query=query, rerank=False))
        reranked = await rt.search.search(project.id, SearchRequest(query=query))
        assert reranked.search_metadata.reranked is True
        scores = [hit.score for hit in reranked.hits]
        assert all(s == UNGRADED or (0 <= s <= 10 and s == int(s)) for s in scores)
        assert scores == sorted(scores, reverse=True)
        # equal grades keep the fused order
        fused = [hit.ranks["fused"] for hit in reranked.hits]
        for a, b in zip(reranked.hits, reranked.hits[1:], strict=False):
            if a.score == b.score:
                assert a.ranks["fused"] < b.ranks["fused"]
        assert sorted(fused) == list(range(1, len(fused) + 1))
        assert {h.chunk_id for h in reranked.hits} == {h.chunk_id for h in plain.hits}
        await rt.gateway.flush()
        used = await usage_by_model_day(
            rt.db, project_id=project.id, since=datetime(2000, 1, 1, tzinfo=UTC)
        )
        assert [(u.model, u.calls >= 4) for u in used] == [("local", True)]
