"""Conversations over a scripted OpenAI-compatible model server (real HTTP, real SDK, real
Postgres, real search): storage, server-sent events, disconnects, failures mid-stream,
history under its budget and the rolling summary."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from quarry.answers.chat import summarise
from quarry.gateway.types import GatewayError
from quarry.jobs.tasks import SUMMARISE_CONVERSATION
from quarry.settings import Settings
from tests.answers.conftest import DOCS_TEXT, LONG_TIDES_QUESTION, Served, events, running, scripted
from tests.chat_server import OK, ChatScript


@pytest.fixture
async def chat(
    ingest_settings: Settings, model_url: str, embedder, tmp_path
) -> AsyncIterator[Served]:
    settings = scripted(ingest_settings, model_url, "generation", "maintenance")
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        yield s


async def new_conversation(http: httpx.AsyncClient, project: str = "energy") -> str:
    made = await http.post(f"/projects/{project}/conversations", json={})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def streamed(http: httpx.AsyncClient, cid: str, content: str) -> list[tuple[str, dict]]:
    """Every event of a streamed turn, read to its end."""
    async with http.stream(
        "POST",
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": content, "stream": True},
    ) as response:
        return [event async for event in events(response)]


async def messages(http: httpx.AsyncClient, cid: str) -> list[dict]:
    got = await http.get(f"/projects/energy/conversations/{cid}")
    assert got.status_code == 200, got.text
    return list(got.json()["messages"])


async def test_conversations_are_created_listed_read_and_deleted(chat: Served) -> None:
    http = chat.http
    first = await new_conversation(http)
    made = await http.post("/projects/energy/conversations", json={"title": "Tides"})
    second = made.json()["id"]
    listed = (await http.get("/projects/energy/conversations")).json()
    assert [c["id"] for c in listed["conversations"]] == [second, first]  # newest first
    page = (await http.get("/projects/energy/conversations", params={"limit": 1})).json()
    assert [c["id"] for c in page["conversations"]] == [second]
    rest = await http.get(
        "/projects/energy/conversations", params={"limit": 1, "before": page["next_before"]}
    )
    assert [c["id"] for c in rest.json()["conversations"]] == [first]
    far = await http.get(  # past year 9999 once in UTC: not a time Python or quarry holds
        "/projects/energy/conversations", params={"before": "9999-12-31T23:59:59-01:00"}
    )
    assert far.status_code == 422
    assert far.json()["errors"][0]["field"] == "query.before"
    unix = await http.get("/projects/energy/conversations", params={"before": "0.5"})
    assert unix.status_code == 422  # a number is not read as a Unix time
    assert unix.json()["errors"][0]["field"] == "query.before"
    detail = (await http.get(f"/projects/energy/conversations/{second}")).json()
    assert detail["title"] == "Tides"
    assert detail["messages"] == []
    assert (await http.delete(f"/projects/energy/conversations/{second}")).status_code == 204
    gone = await http.get(f"/projects/energy/conversations/{second}")
    assert gone.status_code == 404
    assert gone.json()["code"] == "conversation_not_found"
    again = await http.delete(f"/projects/energy/conversations/{second}")
    assert again.json()["code"] == "conversation_not_found"


async def test_pages_neither_skip_nor_repeat_conversations_updated_at_one_instant(
    chat: Served, fresh_database: str
) -> None:
    http = chat.http
    made = {await new_conversation(http) for _ in range(5)}
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE conversations SET updated_at = '2026-01-01T00:00:00Z'")
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = (await http.get("/projects/energy/conversations", params=params)).json()
        seen += [c["id"] for c in page["conversations"]]
        if page["next_before"] is None:
            break
        params = {"limit": 2, "before": page["next_before"], "before_id": page["next_before_id"]}
    assert sorted(seen) == sorted(made)
    assert seen == sorted(seen)  # ties in id order
    alone = await http.get(
        "/projects/energy/conversations", params={"before_id": str(uuid.uuid4())}
    )
    assert alone.status_code == 422
    assert alone.json()["field"] == "query.before_id"


async def test_a_conversation_of_another_project_is_404(chat: Served) -> None:
    http = chat.http
    cid = await new_conversation(http)
    assert (await http.post("/projects", json={"name": "other"})).status_code == 201
    for response in (
        await http.get(f"/projects/other/conversations/{cid}"),
        await http.post(f"/projects/other/conversations/{cid}/messages", json={"content": "x"}),
        await http.delete(f"/projects/other/conversations/{cid}"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "conversation_not_found"
    unknown = await http.post(
        f"/projects/energy/conversations/{uuid.uuid4()}/messages", json={"content": "solar?"}
    )
    assert unknown.json()["code"] == "conversation_not_found"
    malformed = await http.get("/projects/energy/conversations/not-a-uuid")
    assert malformed.status_code == 422
    assert len(await messages(http, cid)) == 0  # and the real one was not touched


async def test_a_json_turn_stores_the_question_and_the_cited_answer(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    sent = await http.post(
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "How do solar panels make electricity?"},
    )
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["answer"] == OK
    [citation] = body["citations"]
    assert citation["number"] == 1
    assert citation["quote"] in DOCS_TEXT
    assert body["usage"]["model"] == "scripted"
    assert body["timings"]["first_token_ms"] <= body["timings"]["total_ms"]
    stored = await messages(http, cid)
    assert [(m["seq"], m["role"], m["status"]) for m in stored] == [
        (1, "user", "complete"),
        (2, "assistant", "complete"),
    ]
    assert stored[1]["content"] == OK
    assert stored[1]["model"] == "scripted"
    assert stored[1]["citations"][0]["quote"] in DOCS_TEXT
    assert stored[0]["tokens"] > 0
    assert stored[1]["tokens"] > 0
    prompt = script.requests[-1]["messages"]
    assert prompt[0]["role"] == "system"
    assert "[1]" in prompt[-1]["content"]
    conversation = (await http.get(f"/projects/energy/conversations/{cid}")).json()
    assert conversation["title"] == "How do solar panels make electricity?"
    assert conversation["message_count"] == 2


async def test_events_arrive_as_the_model_produces_them(chat: Served, script: ChatScript) -> None:
    """The first delta reaches the client while the model is still holding the rest back."""
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["hold:Solar panels |convert light [1]"]
    names: list[str] = []
    async with http.stream(
        "POST",
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "How do solar panels work?"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for name, data in events(response):
            names.append(name)
            if name == "start":
                assert data["user_message"]["content"] == "How do solar panels work?"
            if name == "result":
                assert data["text"] in DOCS_TEXT
            if name == "llm_chunk" and names.count("llm_chunk") == 1:
                assert not script.release.is_set()  # generation has not finished
                assert data["text"] == "Solar panels "
                script.release.set()
            if name == "complete":
                assert data["answer"] == "Solar panels convert light [1] done."
                assert data["message"]["status"] == "complete"
    assert names[0] == "start"
    assert names[-1] == "complete"
    results = names.count("result")
    assert results >= 1
    assert names[1 : 1 + results] == ["result"] * results
    assert names.count("llm_chunk") == 3


async def test_a_conversation_deleted_while_it_answers_ends_its_stream_saying_so(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["hold:Solar panels turn"]
    names: list[str] = []
    async with http.stream(
        "POST",
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "How do solar panels work?", "stream": True},
    ) as response:
        async for name, data in events(response):
            names.append(name)
            if name == "llm_chunk" and names.count("llm_chunk") == 1:
                deleted = await http.delete(f"/projects/energy/conversations/{cid}")
                assert deleted.status_code == 204, deleted.text
                script.release.set()
            if name == "error":
                assert data["code"] == "conversation_not_found"
    assert names[-1] == "error"
    assert (await http.get(f"/projects/energy/conversations/{cid}")).status_code == 404


async def test_a_client_that_leaves_stops_generation_and_the_partial_answer_is_kept(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["hold:Solar panels turn"]
    async with http.stream(
        "POST",
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "How do solar panels work?", "stream": True},
    ) as response:
        async for name, _ in events(response):
            if name == "llm_chunk":
                break  # the client goes away mid-answer
    # the model's stream is closed (generation stops) without the test releasing it
    for _ in range(200):
        stored = await messages(http, cid)
        if len(stored) == 2:
            break
        await asyncio.sleep(0.05)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    answer = stored[1]
    assert answer["status"] == "partial"
    assert answer["content"] == "Solar panels turn"
    assert answer["error"]["code"] == "client_disconnected"
    assert not script.release.is_set()
    assert await asyncio.to_thread(script.left.wait, 30)


async def test_a_second_message_while_one_is_answered_is_refused(
    chat: Served, script: ChatScript, fresh_database: str
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["hold:Solar panels turn"]
    url = f"/projects/energy/conversations/{cid}/messages"
    async with http.stream(
        "POST", url, json={"content": "How do solar panels work?", "stream": True}
    ) as response:
        async for name, _ in events(response):
            if name == "llm_chunk" and not script.release.is_set():  # the answer is under way
                busy = await http.post(url, json={"content": "And wind turbines?"})
                assert busy.status_code == 409, busy.text
                assert busy.json()["code"] == "conversation_busy"
                script.release.set()
        assert name == "complete"
    after = await http.post(url, json={"content": "And wind turbines?"})  # answered: free again
    assert after.status_code == 200, after.text
    assert [(m["role"], m["content"][:10]) for m in await messages(http, cid)] == [
        ("user", "How do sol"),
        ("assistant", "Solar pane"),
        ("user", "And wind t"),
        ("assistant", "Solar pane"),
    ]
    # A question left without an answer (its process died) stops blocking in time.
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "UPDATE conversations SET awaiting_since = now() - interval '1 hour' WHERE id = %s",
            (cid,),
        )
    assert (await http.post(url, json={"content": "And coal?"})).status_code == 200
    unknown = await http.post(
        f"/projects/energy/conversations/{uuid.uuid4()}/messages", json={"content": "x"}
    )
    assert unknown.json()["code"] == "conversation_not_found"


async def test_a_model_failing_mid_stream_sends_an_error_and_keeps_the_history(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["cut:Solar panels |convert"]
    seen = await streamed(http, cid, "How do solar panels work?")
    name, data = seen[-1]
    assert name == "error"
    assert data["code"] == "stream_interrupted"
    assert data["partial"] == "Solar panels convert"
    assert [n for n, _ in seen].count("llm_chunk") == 2
    stored = await messages(http, cid)
    assert [(m["role"], m["status"], m["content"]) for m in stored] == [
        ("user", "complete", "How do solar panels work?"),
        ("assistant", "partial", "Solar panels convert"),
    ]
    assert stored[1]["error"]["code"] == "stream_interrupted"
    # the conversation goes on, with the broken turn in its history
    again = await http.post(
        f"/projects/energy/conversations/{cid}/messages", json={"content": "And wind turbines?"}
    )
    assert again.status_code == 200, again.text
    prompt = script.requests[-1]["messages"]
    assert [m["content"] for m in prompt[1:3]] == [
        "How do solar panels work?",
        "Solar panels convert",
    ]
    assert len(await messages(http, cid)) == 4


async def test_a_model_failing_before_any_text_is_an_error_and_nothing_is_lost(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    script.steps = ["500"]
    seen = await streamed(http, cid, "How do solar panels work?")
    assert seen[-1][0] == "error"
    assert seen[-1][1]["code"] == "models_unavailable"
    script.steps = ["500"]
    as_json = await http.post(
        f"/projects/energy/conversations/{cid}/messages", json={"content": "And wind?"}
    )
    assert as_json.status_code == 503
    assert as_json.json()["code"] == "models_unavailable"
    stored = await messages(http, cid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "failed"),
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    assert stored[1]["error"]["code"] == "models_unavailable"


async def test_nothing_relevant_is_said_without_a_model_call(
    chat: Served, script: ChatScript
) -> None:
    cid = await new_conversation(chat.http)
    sent = await chat.http.post(
        f"/projects/energy/conversations/{cid}/messages", json={"content": "zyxwv qqqq"}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["answered"] is False
    assert script.requests == []
    assert [m["role"] for m in await messages(chat.http, cid)] == ["user", "assistant"]


@pytest.fixture
async def short_history_chat(
    ingest_settings: Settings, model_url: str, embedder, tmp_path
) -> AsyncIterator[Served]:
    """A conversation service whose configured history budget is 48 tokens."""
    settings = scripted(
        ingest_settings, model_url, "generation", "maintenance", answer_history_budget=48
    )
    async with running(settings, embedder, tmp_path / "admin.key") as s:
        yield s


async def test_history_stays_under_its_budget_and_old_turns_are_summarised(
    short_history_chat: Served, script: ChatScript
) -> None:
    http = short_history_chat.http
    cid = await new_conversation(http)
    script.json_text = "The user asked about solar panels and cloudy days."
    questions = [
        "How do solar panels make electricity from sunlight on a bright day?",
        "What happens to the output of solar panels on cloudy days?",
        "How do wind turbines turn the energy of the wind into electricity?",
        "What is bread made from, and how is it baked?",
    ]
    for question in questions:
        sent = await http.post(
            f"/projects/energy/conversations/{cid}/messages", json={"content": question}
        )
        assert sent.status_code == 200, sent.text
        history = sent.json()["history"]
        assert history["tokens"] <= history["budget_tokens"] <= 48
        usage = sent.json()["usage"]
        assert usage is None or usage["input_tokens"] + 384 <= 2048
    assert history["left_out"] > 0  # the first turns no longer fit
    # the summarise job (role maintenance), run by the server's worker, folds them into the
    # rolling summary
    for _ in range(300):
        conversation = (await http.get(f"/projects/energy/conversations/{cid}")).json()
        if conversation["summarized_through"] >= 2:  # each turn's job folds in what it left out
            break
        await asyncio.sleep(0.05)
    assert conversation["summary"] == "The user asked about solar panels and cloudy days."
    assert conversation["summarized_through"] >= 2
    sent = await http.post(
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "And how do wind turbines work?"},
    )
    history = sent.json()["history"]
    assert history["summarized"] is True
    assert history["tokens"] <= 48
    system = script.requests[-1]["messages"][0]["content"]
    assert "Summary of the conversation so far: The user asked about solar panels" in system


def _summary_jobs(url: str, cid: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s "
            "AND args->>'conversation_id' = %s",
            (SUMMARISE_CONVERSATION, cid),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_lowered_budget_leaves_turns_out_of_one_prompt_without_summarising_them(
    chat: Served, script: ChatScript, fresh_database: str
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    first = "How do solar panels make electricity?"
    for question in (first, "And on cloudy days?"):
        sent = await http.post(
            f"/projects/energy/conversations/{cid}/messages", json={"content": question}
        )
        assert sent.status_code == 200, sent.text
    lowered = await http.post(
        f"/projects/energy/conversations/{cid}/messages",
        json={"content": "And wind turbines?", "budget": {"history": 0}},
    )
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["history"]["left_out"] == 4
    assert first not in str(script.requests[-1]["messages"])
    assert _summary_jobs(fresh_database, cid) == 0  # nothing folded for good
    again = await http.post(
        f"/projects/energy/conversations/{cid}/messages", json={"content": "And bread?"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["history"]["left_out"] == 0
    prompt = script.requests[-1]["messages"]
    assert prompt[1]["content"] == first  # read in full again
    # Earlier answers enter without their markers: [1] named another prompt's passage 1.
    answers = [m["content"] for m in prompt if m["role"] == "assistant"]
    assert answers == [OK.replace(" [1]", "")] * 3
    assert _summary_jobs(fresh_database, cid) == 0


async def test_summarise_is_idempotent_and_only_moves_forward(
    chat: Served, script: ChatScript
) -> None:
    http = chat.http
    cid = await new_conversation(http)
    for question in ("How do solar panels work?", "And wind turbines?"):
        sent = await http.post(
            f"/projects/energy/conversations/{cid}/messages", json={"content": question}
        )
        assert sent.status_code == 200, sent.text
    script.steps = ["text:Solar first."]
    gateway, db = chat.rt.gateway, chat.rt.db
    assert await summarise(db, gateway, chat.project, uuid.UUID(cid), 2)
    assert not await summarise(db, gateway, chat.project, uuid.UUID(cid), 2)  # already done
    assert not await summarise(db, gateway, chat.project, uuid.UUID(cid), 1)  # never backwards
    script.steps = ["text: "]  # an empty summary must not replace the one there is
    with pytest.raises(GatewayError, match="empty summary"):
        await summarise(db, gateway, chat.project, uuid.UUID(cid), 4)
    script.steps = ["text:Solar, then wind."]
    assert await summarise(db, gateway, chat.project, uuid.UUID(cid), 4)
    conversation = (await http.get(f"/projects/energy/conversations/{cid}")).json()
    assert (conversation["summary"], conversation["summarized_through"]) == (
        "Solar, then wind.",
        4,
    )
    told = script.requests[-1]["messages"][1]["content"]
    assert "Summary so far: Solar first." in told
    assert "And wind turbines?" in told


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"content": ""}, "validation_error"),
        ({"content": "   "}, "validation_error"),
        ({"content": "solar\u0000"}, "validation_error"),
        ({"content": "x" * 4001}, "validation_error"),
        ({"content": "solar", "budget": {"total": 100000}}, "budget_over_limit"),
        ({"content": "solar", "budget": {"history": 513}}, "budget_over_limit"),
        ({"content": "solar", "budget": {"total": 300}}, "budget_over_limit"),  # reserve 384
        ({"content": "solar", "budget": {"total": 100}}, "validation_error"),
        ({"content": "solar", "stream": "sometimes"}, "validation_error"),
        ({"content": "solar", "surprise": 1}, "validation_error"),
        (
            {"content": "solar " * 600, "budget": {"total": 1024}},
            "question_over_budget",
        ),
        (
            {
                "content": LONG_TIDES_QUESTION,
                "mode": "bm25",
                "budget": {"total": 256, "answer_reserve": 16},
            },
            "budget_too_small",
        ),
    ],
)
async def test_bad_messages_are_refused_and_store_nothing(
    chat: Served, script: ChatScript, body: dict, code: str
) -> None:
    cid = await new_conversation(chat.http)
    sent = await chat.http.post(f"/projects/energy/conversations/{cid}/messages", json=body)
    assert sent.status_code == 422, sent.text
    assert sent.json()["code"] == code
    assert await messages(chat.http, cid) == []
    assert script.requests == []
