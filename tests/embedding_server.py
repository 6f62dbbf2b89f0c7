"""A real OpenAI-compatible /v1/embeddings server for tests, answering from a script.

Each request takes the next step of the script: "ok", "429:<retry-after>", "500", "400",
"slow:<seconds>", "malformed" or "nan" (a NaN in the first vector, as Python's json writes
it); when the script runs out, every request is "ok". Vectors
come from quarry.testing.HashEmbedder, so they are deterministic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarry.testing import HashEmbedder
from tests.support import serving_in_thread


@dataclass
class Script:
    steps: list[str] = field(default_factory=list)
    seen: list[tuple[float, int]] = field(default_factory=list)  # (time, number of inputs)

    def next(self) -> str:
        return self.steps.pop(0) if self.steps else "ok"


def app_for(script: Script) -> Starlette:
    embedder = HashEmbedder(dimensions=16)

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        script.seen.append((time.monotonic(), len(body["input"])))
        step = script.next()
        if step.startswith("429"):
            return Response("slow down", 429, headers={"Retry-After": step.split(":")[1]})
        if step in ("500", "400"):
            return Response("nope", int(step))
        if step.startswith("slow"):
            await asyncio.sleep(float(step.split(":")[1]))
        if step == "malformed":
            return Response("{not json", 200, media_type="application/json")
        vectors = await embedder.embed(body["input"])
        data = [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        if step == "nan":
            data[0]["embedding"][0] = float("nan")
            answer = json.dumps({"data": data, "model": body["model"]})
            return Response(answer, 200, media_type="application/json")
        return JSONResponse({"data": list(reversed(data)), "model": body["model"]})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@contextmanager
def embedding_server(script: Script) -> Iterator[str]:
    with serving_in_thread(app_for(script)) as url:
        yield f"{url}/v1"
