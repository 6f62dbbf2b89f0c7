"""Ask, end to end: the real pipeline, search, context builder and the bundled model."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from quarry.answers.ask import NOTHING_FOUND
from quarry.answers.citations import clean_citations, without_citations
from quarry.app import create_app
from quarry.ingest.documents import text_source
from quarry.runtime import Runtime, background_worker
from tests.conftest import bearer
from tests.support import settle

DOCS = {
    "solar": "Solar panels convert sunlight into electricity. Output drops on cloudy days.",
    "wind": "Wind turbines turn the wind's energy into electricity with a generator.",
    "bread": "Bread is made from flour, water, salt and yeast, and baked in an oven.",
}


def test_unknown_citations_are_removed_and_reported() -> None:
    text, cited, unknown = clean_citations("Sun [1] and wind [3]. Also [7][1] and [12].", {1, 3})
    assert text == "Sun [1] and wind [3]. Also [1] and."
    assert cited == [1, 3]
    assert unknown == [7, 12]
    assert clean_citations("No sources.", {1}) == ("No sources.", [], [])


def test_grouped_citations_are_checked_number_by_number() -> None:
    text, cited, unknown = clean_citations(
        "Output rose [1, 7]. Both [1-3] and [3; 2]. Also [4 \u2013 5] here.", {1, 2, 3}
    )
    assert text == "Output rose [1]. Both [1][2][3] and [3][2]. Also here."
    assert cited == [1, 2, 3]
    assert unknown == [7, 4, 5]
    # A span too long to be a range of passages is read as its two ends.
    assert clean_citations("In [1-2019].", {1}) == ("In [1].", [1], [2019])


def test_brackets_in_code_are_not_citations_and_layout_is_kept() -> None:
    answer = (
        "Read `sys.argv[1]` first [2].\n\n```python\ndef f(a):\n    return a[0]  # [9]\n```\n"
        "- item [9]\n    - nested  item"
    )
    text, cited, unknown = clean_citations(answer, {2})
    assert text == (
        "Read `sys.argv[1]` first [2].\n\n```python\ndef f(a):\n    return a[0]  # [9]\n```\n"
        "- item\n    - nested  item"
    )
    assert cited == [2]
    assert unknown == [9]
    assert without_citations("Sun [1, 2] and `a[1]` [3].") == "Sun and `a[1]`."
    assert clean_citations("Wind [8][9].", {1}) == ("Wind.", [], [8, 9])


def test_citation_cleaning_takes_linear_time_on_long_runs_of_spaces() -> None:
    # A client's history goes through it: no input may make it quadratic, as a pattern with
    # an unbounded run of spaces before the bracket did.
    for text in (" " * 200_000 + "x", "[1" + " " * 200_000, "[1, " * 50_000):
        assert clean_citations(text, {1})[0] == text.strip()


@pytest.fixture
async def asking(
    ingest_runtime: Runtime, ingest_settings, admin
) -> AsyncIterator[httpx.AsyncClient]:
    rt = ingest_runtime
    app = create_app(ingest_settings, runtime=rt)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as http:
            key = bearer(admin.api_key.secret)
            made = await http.post("/projects", json={"name": "energy"}, headers=key)
            project = made.json()["id"]
            for name, text in DOCS.items():
                await rt.documents.submit(
                    uuid.UUID(project),
                    text_source(
                        text, external_id=name, title=name.title(), fmt="txt", metadata={}, tags=()
                    ),
                )
            async with background_worker(rt, "test"):
                assert (await settle(rt, uuid.UUID(project)))["failed"] == 0
            http.headers.update(key)
            yield http


async def test_ask_answers_with_valid_citations(asking: httpx.AsyncClient, ingest_runtime) -> None:
    answer = await asking.post(
        "/projects/energy/ask", json={"question": "How do solar panels make electricity?"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["answered"] is True
    assert body["answer"].strip()
    context = body["context"]
    assert 1 <= context["passages"] <= 3
    assert context["tokens"] <= context["budget_tokens"]
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", body["answer"])}
    assert numbers == {c["number"] for c in body["citations"]}  # every [n] left is a passage
    assert all(1 <= n <= context["passages"] for n in numbers)
    for citation in body["citations"]:
        assert citation["quote"] in DOCS[citation["document_title"].lower()]
    usage = body["usage"]
    assert usage["model"] == "local"
    assert usage["input_tokens"] > context["tokens"]
    assert 0 < usage["output_tokens"] <= 384
    await ingest_runtime.gateway.flush()
    rows = await asking.get("/projects/energy/usage")
    assert rows.json()["days"][0]["calls"] == 1


async def test_nothing_relevant_means_no_model_call(
    asking: httpx.AsyncClient, ingest_runtime
) -> None:
    answer = await asking.post("/projects/energy/ask", json={"question": "zyxwv qqqq"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["answered"] is False
    assert body["answer"] == NOTHING_FOUND
    assert body["usage"] is None
    await ingest_runtime.gateway.flush()
    assert (await asking.get("/projects/energy/usage")).json()["days"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "x", "budget": {"total": 100000}}, "total"),
        ({"question": "x", "budget": {"answer_reserve": 5}}, "answer_reserve"),
        ({"question": "x", "k": 0}, "k"),
        ({"question": "x", "surprise": 1}, "surprise"),
        ({"question": "solar " * 600, "budget": {"total": 1024}}, "question_over_budget"),
        ({"question": "x", "budget": {"total": 300}}, "budget_over_limit"),  # reserve 384
    ],
)
async def test_bad_questions_are_422(asking: httpx.AsyncClient, body, field: str) -> None:
    answer = await asking.post("/projects/energy/ask", json=body)
    assert answer.status_code == 422
    assert field in answer.text


async def test_ask_in_a_project_you_cannot_see_is_404(asking: httpx.AsyncClient) -> None:
    answer = await asking.post("/projects/nope/ask", json={"question": "x"})
    assert answer.status_code == 404
    assert answer.json()["code"] == "project_not_found"
