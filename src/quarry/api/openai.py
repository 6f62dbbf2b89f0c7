"""An OpenAI-compatible face: `POST /v1/chat/completions` and `GET /v1/models`.

The official OpenAI SDK, and tools built on it, talk to quarry with the quarry API key as
their API key and `base_url` ending in `/v1`. A model is a project's RAG assistant, named
`quarry/<project>`: the last message (a user's) is the question, earlier user and assistant
messages are the history (within `budget.history`; client system messages are not used, the
grounding instructions are quarry's). The endpoint is stateless, like OpenAI's: nothing is
stored (use the conversations API for stored chats).

Citations travel in an extra top-level field, `quarry`: on the response, or on the last chunk
of a stream. Streamed deltas are the model's text as produced; `quarry.answer` is the final
text with any [n] that names no source removed (listed in `quarry.unknown_citations`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quarry.answers.ask import NOTHING_FOUND, ROLE, Answers, Earlier, Prepared
from quarry.answers.history import StoredTurn
from quarry.answers.models import AskBudget, AskRequest, Citation, ContextSummary
from quarry.api.deps import PrincipalDep, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.errors import InvalidInput, ProjectNotFound, QuarryError
from quarry.gateway.types import StreamEnd, Usage
from quarry.search.models import Mode
from quarry.tenancy.models import Principal, Role
from quarry.validation import Body

router = APIRouter(prefix="/v1", tags=["openai"], responses=problem_responses(401, 404, 422))
PREFIX = "quarry/"
MIN_ANSWER_TOKENS = 16  # the smallest answer reserve a budget takes
MAX_MESSAGES = 200  # history beyond what any budget holds is refused, not read
MAX_CHARACTERS = 200_000


class ChatMessage(Body):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id...: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones, joined
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class QuarryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode = Mode.hybrid
    k: int = Field(default=20, ge=1, le=100)
    budget: AskBudget = Field(default_factory=AskBudget)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(Body):
    """OpenAI's request; parameters it has that quarry does not use (top_p, seed, user...)
    are accepted and ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="quarry/<project name or id>")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(
        default=None, ge=1, description="lowers the answer reserve (to 16 at the least)"
    )
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1, description="one answer per request")
    quarry: QuarryOptions = Field(
        default_factory=QuarryOptions,
        description="quarry's search and budget options (the SDK's `extra_body`)",
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].text.strip():
            raise ValueError("the last message must be the user's question, with text")
        if len(messages[-1].text) > 4000:
            raise ValueError("the question is longer than 4000 characters")
        if sum(len(m.text) for m in messages) > MAX_CHARACTERS:
            raise ValueError(f"the messages hold more than {MAX_CHARACTERS} characters")
        return messages


class QuarryExtra(BaseModel):
    """The `quarry` field of a completion, or of a stream's last chunk."""

    answered: bool = Field(description="false when retrieval found nothing relevant")
    answer: str = Field(description="the answer with [n] that name no source removed")
    citations: list[Citation]
    unknown_citations: list[int]
    context: ContextSummary


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    quarry: QuarryExtra


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "quarry"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", summary="The projects this key can ask, as OpenAI models")
async def list_models(rt: RuntimeDep, me: PrincipalDep) -> ModelList:
    projects = await rt.projects.list_for(me)
    return ModelList(
        data=[
            ModelCard(id=f"{PREFIX}{p.name}", created=int(p.created_at.timestamp()))
            for p in projects
        ]
    )


@router.post(
    "/chat/completions",
    summary="Answer the last message from a project's documents, OpenAI-style",
    description=__doc__,
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(502, 503)},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, rt: RuntimeDep, me: PrincipalDep
) -> Any:
    project_id = await _project(rt, me, body.model)
    question = body.messages[-1].text
    turns = [m for m in body.messages[:-1] if m.role in ("user", "assistant") and m.text]
    await rt.answers.ready()  # the turns are counted in its tokens
    earlier = Earlier(
        "",
        0,
        [
            StoredTurn(i, m.role, m.text, rt.answers.count_tokens(m.text))
            for i, m in reversed(list(enumerate(turns, start=1)))
        ],
    )
    options = body.quarry
    budget = options.budget
    limit = body.max_completion_tokens or body.max_tokens
    limit = None if limit is None else max(MIN_ANSWER_TOKENS, limit)
    reserve = budget.answer_reserve or rt.answers.limits.answer_reserve
    if limit is not None and limit < reserve:
        budget = budget.model_copy(update={"answer_reserve": limit})
    ask = AskRequest(question=question, mode=options.mode, k=options.k, budget=budget)
    prepared = await rt.answers.prepare(project_id, ask, earlier)
    completion_id = f"chatcmpl-{getattr(request.state, 'request_id', None) or uuid.uuid4().hex}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _stream(rt.answers, prepared, project_id, me, body.model, completion_id)
        return StreamingResponse(
            _sse(chunks, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text, usage, finish = NOTHING_FOUND, None, "stop"
    if prepared.relevant:
        done = await rt.answers.gateway.generate(
            ROLE,
            prepared.messages,
            project_id=project_id,
            user_id=me.user_id,
            max_tokens=prepared.context.budget.answer_reserve,
            token_budget=prepared.context.budget.total,  # for a fallback model too
            temperature=0,
        )
        text, usage = done.text, done.usage
        finish = "length" if done.finish_reason == "length" else "stop"
    extra = _extra(prepared, text)
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=extra.answer), finish_reason=finish)],
        usage=_usage(usage),
        quarry=extra,
    )


async def _project(rt: Any, me: Principal, model: str) -> uuid.UUID:
    if not model.startswith(PREFIX) or len(model) == len(PREFIX):
        raise InvalidInput(
            f"model {model!r} is not a quarry assistant; use quarry/<project> "
            "(GET /v1/models lists them)",
            field="model",
        )
    try:
        found = await rt.projects.resolve(me, model.removeprefix(PREFIX), Role.viewer)
    except ProjectNotFound:
        raise ProjectNotFound(f"no model {model!r}: no such project for this key") from None
    project_id: uuid.UUID = found.id
    return project_id


def _extra(prepared: Prepared, text: str) -> QuarryExtra:
    """The `quarry` field: the checked answer, its citations and the context's summary."""
    if prepared.relevant:
        answer, citations, unknown = prepared.cite(text)
    else:
        answer, citations, unknown = NOTHING_FOUND, [], []
    return QuarryExtra(
        answered=prepared.relevant,
        answer=answer,
        citations=citations,
        unknown_citations=unknown,
        context=prepared.context_summary(),
    )


def _usage(usage: Usage | None) -> CompletionUsage:
    if usage is None:
        return CompletionUsage()
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


Chunk = dict[str, Any]  # one chat.completion.chunk, or {"error": ...}


async def _stream(
    answers: Answers,
    prepared: Prepared,
    project_id: uuid.UUID,
    me: Principal,
    model: str,
    completion_id: str,
) -> AsyncIterator[tuple[Chunk, Usage | None]]:
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> Chunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            **extra,
        }

    yield chunk({"role": "assistant", "content": ""}), None
    if not prepared.relevant:
        yield chunk({"content": NOTHING_FOUND}), None
        yield chunk({}, "stop", quarry=_extra(prepared, "").model_dump(mode="json")), None
        return
    try:
        async for item in answers.stream(prepared, project_id, me.user_id):
            if not isinstance(item, StreamEnd):
                yield chunk({"content": item}), None
                continue
            if item.error is not None:
                error = {"code": item.error.code, "message": item.error.detail}
                extra = _extra(prepared, item.text).model_dump(mode="json")
                yield {"error": error, "quarry": extra}, item.usage
                return
            finish = "length" if item.finish_reason == "length" else "stop"
            extra = _extra(prepared, item.text).model_dump(mode="json")
            yield chunk({}, finish, quarry=extra), item.usage
    except QuarryError as exc:  # every model failed before its first token, or refused the call
        yield {"error": {"code": exc.code, "message": exc.detail}}, None


async def _sse(
    chunks: AsyncIterator[tuple[Chunk, Usage | None]], include_usage: bool
) -> AsyncIterator[bytes]:
    last: dict[str, Any] | None = None
    usage: Usage | None = None
    async for item, used in chunks:
        usage = used or usage
        last = item
        yield f"data: {json.dumps(item)}\n\n".encode()
    if include_usage and last is not None and "error" not in last:
        tail = {**last, "choices": [], "usage": _usage(usage).model_dump()}
        tail.pop("quarry", None)
        yield f"data: {json.dumps(tail)}\n\n".encode()
    yield b"data: [DONE]\n\n"
