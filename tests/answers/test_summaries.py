"""Document summaries: written by a job after indexing (role maintenance, a scripted model
over real HTTP), kept per version, and standing in for passages when the budget is tight."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from quarry.answers.summaries import summarise_document
from quarry.ingest.documents import text_source
from quarry.runtime import background_worker
from quarry.settings import Settings
from tests.answers.conftest import LONG_TIDES_QUESTION, TIDES, Served, running, scripted
from tests.chat_server import ChatScript
from tests.support import settle

FIRST = "Tides follow the moon."


@pytest.fixture
async def summarising(
    ingest_settings: Settings, model_url: str, embedder, tmp_path, script: ChatScript
) -> AsyncIterator[Served]:
    settings = scripted(
        ingest_settings, model_url, "generation", "maintenance", document_summaries=True
    )
    script.json_text = FIRST  # what the summaries written while the project loads say
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        yield s


async def summary_of(s: Served, external_id: str) -> str | None:
    listed = (await s.http.get("/projects/energy/documents", params={"limit": 100})).json()
    [document] = [d for d in listed["documents"] if d["external_id"] == external_id]
    got = (await s.http.get(f"/projects/energy/documents/{document['id']}")).json()
    return got["summary"]


async def wait_for_summary(s: Served, external_id: str, expected: str) -> None:
    for _ in range(300):
        if await summary_of(s, external_id) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{external_id} was not summarised as {expected!r}")


async def test_each_indexed_version_is_summarised_and_a_tight_budget_uses_it(
    summarising: Served, script: ChatScript
) -> None:
    s = summarising
    await wait_for_summary(s, "tides", FIRST)
    summaries = [r for r in script.requests if not r.get("stream")]
    assert any("Document: Tides" in r["messages"][1]["content"] for r in summaries)

    # A tight budget: the tides chunk no longer fits, its summary stands in for it.
    made = await s.http.post("/projects/energy/conversations", json={})
    asked = await s.http.post(
        f"/projects/energy/conversations/{made.json()['id']}/messages",
        json={
            "content": LONG_TIDES_QUESTION,
            "mode": "bm25",
            "budget": {"total": 256, "answer_reserve": 16},
        },
    )
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert body["context"]["dropped"] == {"replaced_by_summary": 1}
    [citation] = body["citations"]  # the scripted answer (streamed) cites [1]
    assert citation["kind"] == "summary"
    assert citation["quote"] == FIRST
    assert citation["chunk_ids"] == []

    # A new version is summarised again; until then its old summary is not used.
    script.json_text = "Tides follow the moon and the sun."
    await s.rt.documents.submit(
        s.project,
        text_source(
            TIDES + " The sun matters too.", external_id="tides", title="Tides", fmt="txt",
            metadata={}, tags=(),
        ),
    )  # fmt: skip
    async with background_worker(s.rt, "again"):
        await settle(s.rt, s.project)
    await wait_for_summary(s, "tides", "Tides follow the moon and the sun.")


async def test_summarising_is_skipped_when_there_is_nothing_new(
    summarising: Served, script: ChatScript
) -> None:
    s = summarising
    await wait_for_summary(s, "bread", FIRST)
    listed = (await s.http.get("/projects/energy/documents", params={"limit": 100})).json()
    bread = uuid.UUID(next(d["id"] for d in listed["documents"] if d["external_id"] == "bread"))
    calls = len(script.requests)
    assert not await summarise_document(s.rt.db, s.rt.gateway, s.project, bread)
    assert not await summarise_document(s.rt.db, s.rt.gateway, s.project, uuid.uuid4())
    assert len(script.requests) == calls


async def test_summaries_are_off_by_default(
    ingest_settings: Settings, model_url: str, embedder, tmp_path, script: ChatScript
) -> None:
    settings = scripted(ingest_settings, model_url, "generation", "maintenance")
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        assert await summary_of(s, "tides") is None
    assert script.requests == []
