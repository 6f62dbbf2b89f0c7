"""A project of three short documents and one long one, served over real HTTP when a test
needs streaming (httpx's ASGI transport reads a whole response before returning it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from quarry.app import create_app
from quarry.gateway.config import ModelConfig
from quarry.ingest.documents import text_source
from quarry.runtime import Runtime, background_worker, open_runtime
from quarry.settings import Settings
from tests.chat_server import ChatScript, chat_server
from tests.conftest import bearer
from tests.support import free_port, settle

DOCS = {
    "solar": "Solar panels convert sunlight into electricity. Output drops on cloudy days.",
    "wind": "Wind turbines turn the wind's energy into electricity with a generator.",
    "bread": "Bread is made from flour, water, salt and yeast, and baked in an oven.",
}
# One chunk far larger than a small budget's evidence: every sentence is about tides.
# A question long enough that a 256-token budget leaves less evidence room than even the tides
# chunk cut to its best sentences needs.
LONG_TIDES_QUESTION = "Why do tides rise and fall with the moon's gravity? " + (
    "Tides, moon, gravity, oceans. " * 12
)
TIDES = " ".join(
    f"Tides rise and fall twice a day because the moon's gravity pulls the oceans, note {i}."
    for i in range(12)
)


DOCS_TEXT = " ".join([*DOCS.values(), TIDES])


@pytest.fixture
def script() -> ChatScript:
    return ChatScript()


@pytest.fixture
def model_url(script: ChatScript) -> Iterator[str]:
    """A scripted OpenAI-compatible model server (real HTTP)."""
    with chat_server(script) as url:
        yield url


def scripted(settings: Settings, url: str, *roles: str, **more: object) -> Settings:
    """The settings with the scripted server as the only model of ``roles``."""
    model = ModelConfig(
        provider="openai_compatible", base_url=url, model="scripted", max_retries=0, timeout=10
    )
    return settings.model_copy(
        update={"models": {"scripted": model}, "roles": {r: ["scripted"] for r in roles}, **more}
    )


@dataclass
class Served:
    http: httpx.AsyncClient  # authenticated, on the real server (or the ASGI app)
    base_url: str
    key: str
    rt: Runtime
    project: uuid.UUID


async def load_project(rt: Runtime, http: httpx.AsyncClient, key: str) -> uuid.UUID:
    made = await http.post("/projects", json={"name": "energy"}, headers=bearer(key))
    assert made.status_code == 201, made.text
    project = uuid.UUID(made.json()["id"])
    for name, text in {**DOCS, "tides": TIDES}.items():
        await rt.documents.submit(
            project,
            text_source(
                text, external_id=name, title=name.title(), fmt="txt", metadata={}, tags=()
            ),
        )
    async with background_worker(rt, "load"):
        assert (await settle(rt, project))["failed"] == 0
    return project


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real uvicorn server, in this event loop (it shares the test's runtime)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def served(settings: Settings, rt: Runtime, key: str) -> AsyncIterator[Served]:
    app = create_app(settings.model_copy(update={"worker_in_process": True}), runtime=rt)
    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=120) as http,
    ):
        project = await load_project(rt, http, key)
        http.headers.update(bearer(key))
        yield Served(http, base_url, key, rt, project)


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    """Server-sent events as (name, data), read as they arrive."""
    import json

    name, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


@asynccontextmanager
async def running(settings: Settings, embedder, key_path) -> AsyncIterator[Served]:
    """quarry on a real server over the energy project, with an admin to act as."""
    async with open_runtime(settings, embedder=embedder) as rt:
        admin = await rt.users.bootstrap_admin(key_path)
        assert admin is not None
        async with served(settings, rt, admin.api_key.secret) as s:
            yield s
