"""Scripted provider HTTP servers for the SDKs' own HTTP layer (an httpx2 transport).

The bodies follow the providers' documented wire formats (OpenAI chat completions and its
server-sent chunk stream; Anthropic messages and its event stream), recorded as the SDKs
receive them. Each step answers one request; the last step repeats.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx2

Step = Callable[[httpx2.Request], httpx2.Response]


class Script:
    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/models"):
            return models_list()(request)  # what a probe asks; not a step of the script
        self.paths.append(request.url.path)
        self.requests.append(json.loads(request.content) if request.content else {})
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return step(request)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))


def status(
    code: int, *, retry_after: str | None = None, message: str = "", error_code: str | None = None
) -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        body = {
            "error": {"message": message or f"status {code}", "type": "error", "code": error_code}
        }
        return httpx2.Response(code, json=body, headers=headers)

    return answer


def timeout() -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    return answer


def _sse(events: Sequence[str], *, cut: bool, every: float = 0.0) -> AsyncIterator[bytes]:
    """The events as a body; ``every``: seconds between them."""

    async def body() -> AsyncIterator[bytes]:
        for i, event in enumerate(events):
            if every and i:
                await asyncio.sleep(every)
            yield event.encode()
        if cut:
            raise httpx2.RemoteProtocolError("peer closed connection without sending complete body")

    return body()


# OpenAI -------------------------------------------------------------------------------------


def openai_reply(text: str, prompt_tokens: int = 12, completion_tokens: int = 5) -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        return httpx2.Response(
            200,
            json={
                "id": "chatcmpl-BqR2f1",
                "object": "chat.completion",
                "created": 1763700000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    return answer


def _openai_chunk(model: str, delta: dict[str, Any], finish: str | None) -> str:
    chunk = {
        "id": "chatcmpl-BqR2f2",
        "object": "chat.completion.chunk",
        "created": 1763700000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


def openai_stream(
    deltas: Sequence[str],
    *,
    cut: bool = False,
    usage: tuple[int, int] | None = (12, 3),
    every: float = 0.0,
) -> Step:
    """Deltas as chat.completion.chunk events; ``cut`` drops the connection after them;
    ``every``: seconds between events."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        events = [_openai_chunk(model, {"role": "assistant", "content": ""}, None)]
        events += [_openai_chunk(model, {"content": d}, None) for d in deltas]
        if not cut:
            events.append(_openai_chunk(model, {}, "stop"))
            if usage is not None:
                tail = {
                    "id": "chatcmpl-BqR2f2",
                    "object": "chat.completion.chunk",
                    "created": 1763700000,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage[0],
                        "completion_tokens": usage[1],
                        "total_tokens": sum(usage),
                    },
                }
                events.append(f"data: {json.dumps(tail)}\n\n")
            events.append("data: [DONE]\n\n")
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=_sse(events, cut=cut, every=every),
        )

    return answer


def openai_embeddings(dimensions: int = 4) -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        texts = json.loads(request.content)["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + 1)] * dimensions}
            for i in range(len(texts))
        ]
        return httpx2.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
            },
        )

    return answer


# Anthropic ----------------------------------------------------------------------------------


def anthropic_reply(
    text: str,
    input_tokens: int = 14,
    output_tokens: int = 6,
    *,
    tool: bool = False,
    stop: str = "end_turn",
) -> Step:
    """A message; with ``tool``, the text is the JSON input of a forced tool call."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if tool:
            name = body["tools"][0]["name"]
            content = [
                {"type": "tool_use", "id": "toolu_01A", "name": name, "input": json.loads(text)}
            ]
            reason = "tool_use"
        else:
            content = [{"type": "text", "text": text}]
            reason = stop
        return httpx2.Response(
            200,
            json={
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
        )

    return answer


def _anthropic_event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def anthropic_stream(deltas: Sequence[str], *, cut: bool = False, stop: str = "end_turn") -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        message = {
            "id": "msg_01Stream",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 14, "output_tokens": 1},
        }
        events = [
            _anthropic_event("message_start", {"message": message}),
            _anthropic_event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            ),
        ]
        events += [
            _anthropic_event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": d}}
            )
            for d in deltas
        ]
        if not cut:
            events += [
                _anthropic_event("content_block_stop", {"index": 0}),
                _anthropic_event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": len(deltas)},
                    },
                ),
                _anthropic_event("message_stop", {}),
            ]
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=_sse(events, cut=cut)
        )

    return answer


# Servers that answer any request sensibly, for the contract suite ----------------------------

CONTRACT_TEXT = ["Paris ", "is ", "the ", "capital."]
CONTRACT_JSON = '{"answer": "Paris"}'


def openai_contract() -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            return openai_stream(CONTRACT_TEXT, usage=(20, len(CONTRACT_TEXT)))(request)
        if "response_format" in body:
            return openai_reply(CONTRACT_JSON, 30, 6)(request)
        return openai_reply("".join(CONTRACT_TEXT), 20, len(CONTRACT_TEXT))(request)

    return answer


def anthropic_contract() -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            return anthropic_stream(CONTRACT_TEXT)(request)
        if "tools" in body:
            return anthropic_reply(CONTRACT_JSON, 30, 6, tool=True)(request)
        return anthropic_reply("".join(CONTRACT_TEXT), 20, len(CONTRACT_TEXT))(request)

    return answer


def models_list() -> Step:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"object": "list", "data": [], "has_more": False})

    return answer
