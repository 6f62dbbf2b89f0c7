"""A real OpenAI-compatible /v1/chat/completions server for tests, answering from a script.

Each request takes the next step of the script (when it runs out, every request is "ok"):

- ``"ok"`` or ``"text:A|B|C"``: stream the deltas (``ok``: "Solar panels make power [1].");
- ``"cut:A|B"``: stream the deltas, then break the connection mid-stream;
- ``"hold:A"``: stream the deltas, then wait until ``release`` is set before finishing with
  " done.";
- ``"500"``: answer 500 before any text.

A request without ``stream`` gets the whole text as one JSON completion (``json_text``, when
set, instead of a step). ``left`` is set when a
stream ends before its last event: the client went away (or the script cut it).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import serving_in_thread

OK = "Solar panels make power [1]."


@dataclass
class ChatScript:
    steps: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    left: threading.Event = field(default_factory=threading.Event)
    json_text: str | None = None  # when set, what every request without stream gets

    def next(self) -> str:
        return self.steps.pop(0) if self.steps else "ok"


def _deltas(step: str) -> list[str]:
    if step == "ok":
        return [OK[:12], OK[12:]]
    return step.split(":", 1)[1].split("|")


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def app_for(script: ChatScript) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        script.requests.append(body)
        step = "text:" + script.json_text if script.json_text and not body.get("stream") else ""
        step = step or script.next()
        if step == "500":
            return Response("upstream broke", 500)
        kind = step.split(":", 1)[0]
        deltas = _deltas(step)
        if not body.get("stream"):
            text = "".join(deltas)
            return JSONResponse(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "scripted",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
                }
            )

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                yield _chunk({"role": "assistant", "content": ""})
                for delta in deltas:
                    yield _chunk({"content": delta})
                    await asyncio.sleep(0.01)
                if kind == "cut":
                    raise ConnectionResetError("the test server breaks the stream")
                # hold: an SSE comment now and then (writing is how a server notices a
                # client that left) until the test releases the rest
                while kind == "hold" and not script.release.is_set():
                    yield b": waiting\n\n"
                    await asyncio.sleep(0.05)
                if kind == "hold":
                    yield _chunk({"content": " done."})
                yield _chunk({}, "stop")
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    script.left.set()  # the client left (or the stream was cut)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextmanager
def chat_server(script: ChatScript) -> Iterator[str]:
    """The base URL (…/v1) of a scripted server running in a thread of its own."""
    with serving_in_thread(app_for(script), log_level="critical") as url:
        try:
            yield f"{url}/v1"
        finally:
            script.release.set()  # a held stream ends, so the server can stop
