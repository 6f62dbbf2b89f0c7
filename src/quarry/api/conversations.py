"""Conversations with a project: create, list, read, delete, and send a message (answered as
JSON or as server-sent events)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from quarry.answers.chat import Turn
from quarry.answers.models import (
    ConversationCreate,
    ConversationDetail,
    ConversationList,
    ConversationOut,
    MessageRequest,
    TurnResult,
)
from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.errors import InvalidInput
from quarry.tenancy.models import Role
from quarry.validation import Timestamp

router = APIRouter(
    prefix="/projects/{project}/conversations",
    tags=["conversations"],
    responses=problem_responses(401, 403, 404, 422),
)
ConversationRef = Annotated[uuid.UUID, Path(description="the conversation's id")]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

STREAM_DESCRIPTION = """\
Answers the message from the project's documents, with the conversation's earlier turns in
the prompt (within `budget.history`; older turns are summarised in the background). One
message at a time: a message sent while the last is still being answered is a 409
`conversation_busy`.

With `"stream": true` or `Accept: text/event-stream` the answer comes as server-sent events:

- `start`: `conversation_id`, the stored `user_message`, `request_id`, `model`;
- `result`: one per source the model reads (`number`, `kind`: `passage` or a document's
  `summary`, `document_id`, `document_title`, `chunk_ids`, `page`, `char_start`,
  `char_end`, `text`);
- `llm_chunk`: `{"text": ...}`, each delta as the model produces it;
- then `complete` (the same object the JSON answer returns: answer, citations, usage,
  timings, the stored message) or `error` (`code`, `detail`; where the answer was stored,
  also `partial`: the text sent before the failure, and the stored `message`; not where the
  conversation was deleted meanwhile or the answer could not be stored).

The user's message is stored before the answer starts; the answer is stored when it ends,
as `complete`, `partial` (the model broke off, or the client disconnected: generation stops
and the text produced so far is kept) or `failed`.
"""


@router.post(
    "",
    status_code=201,
    summary="Start a conversation",
)
async def create_conversation(
    project: ProjectRef, body: ConversationCreate, rt: RuntimeDep, me: PrincipalDep
) -> ConversationOut:
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.conversations.create(found.id, me.user_id, body.title)


@router.get("", summary="List the project's conversations, most recently active first")
async def list_conversations(
    project: ProjectRef,
    rt: RuntimeDep,
    me: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        Timestamp | None, Query(description="the previous page's `next_before`")
    ] = None,
    before_id: Annotated[
        uuid.UUID | None,
        Query(description="the previous page's `next_before_id` (only with `before`)"),
    ] = None,
) -> ConversationList:
    if before_id is not None and before is None:
        raise InvalidInput("before_id goes with before", field="query.before_id")
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.conversations.recent(found.id, limit, before, before_id)


@router.get("/{conversation}", summary="A conversation with its messages")
async def get_conversation(
    project: ProjectRef, conversation: ConversationRef, rt: RuntimeDep, me: PrincipalDep
) -> ConversationDetail:
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.conversations.get(found.id, conversation)


@router.delete(
    "/{conversation}", status_code=204, summary="Delete a conversation (editor, as documents)"
)
async def delete_conversation(
    project: ProjectRef, conversation: ConversationRef, rt: RuntimeDep, me: PrincipalDep
) -> Response:
    found = await rt.projects.resolve(me, project, Role.editor)
    await rt.conversations.delete(found.id, conversation)
    return Response(status_code=204)


@router.post(
    "/{conversation}/messages",
    summary="Send a message and get the answer, as JSON or as server-sent events",
    description=STREAM_DESCRIPTION,
    response_model=TurnResult,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **problem_responses(409, 502, 503),
    },
)
async def send_message(
    project: ProjectRef,
    conversation: ConversationRef,
    body: MessageRequest,
    request: Request,
    rt: RuntimeDep,
    me: PrincipalDep,
) -> TurnResult | Response:
    found = await rt.projects.resolve(me, project, Role.viewer)
    turn = await rt.conversations.start_turn(
        found.id, me.user_id, conversation, body, getattr(request.state, "request_id", None)
    )
    if body.stream or wants_events(request.headers.get("accept", "")):
        return StreamingResponse(_sse(turn), media_type="text/event-stream", headers=SSE_HEADERS)
    return await turn.run()


async def _sse(turn: Turn) -> AsyncIterator[bytes]:
    async for event in turn.events():
        yield event.encode()


def wants_events(accept: str) -> bool:
    """Whether an Accept header asks for server-sent events: it names text/event-stream with
    a weight above 0 and at least JSON's (application/json, application/* or */*)."""
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.lower()] = max(weight, weights.get(media.lower(), 0.0))
    events = weights.get("text/event-stream", 0.0)
    json_weight = max(weights.get(m, 0.0) for m in ("application/json", "application/*", "*/*"))
    return events > 0 and events >= json_weight
