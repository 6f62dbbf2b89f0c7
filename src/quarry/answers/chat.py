"""Conversations: stored turns, history under its own budget, and answers as events.

A turn runs in three steps:

1. ``Conversations.start_turn`` checks the conversation, prepares the answer (question against
   the budget, history, search, context) and only then stores the user's message: a request
   refused for its input stores nothing.
2. ``Turn.events`` sends ``start``, one ``result`` per source, then the model's ``llm_chunk``
   deltas as they arrive, then ``complete`` or ``error``. Generation runs in a task of its
   own that the reader only listens to: when the reader goes away (the client disconnected),
   the generation is stopped and what was produced is stored as a ``partial`` message.
3. The answer is stored (``complete``, ``partial`` or ``failed`` with the error) before the
   last event is sent. When turns no longer fit the configured history budget and are not in
   the rolling summary yet, the summarise job is queued to fold them in (role
   ``maintenance``); turns one request left out for want of room are not folded.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from psycopg.types.json import Jsonb

from quarry.answers.ask import NOTHING_FOUND, Answers, Earlier, Prepared, answer_usage
from quarry.answers.history import StoredTurn
from quarry.answers.models import (
    AnswerUsage,
    Citation,
    ConversationDetail,
    ConversationList,
    ConversationOut,
    MessageOut,
    MessageRequest,
    Timings,
    TurnResult,
)
from quarry.db.database import Database
from quarry.errors import (
    ClientDisconnected,
    ConversationBusy,
    ConversationNotFound,
    QuarryError,
)
from quarry.gateway.gateway import Gateway
from quarry.gateway.types import GatewayError, StreamEnd, Usage

log = structlog.get_logger(__name__)
KEEPALIVE = 1.0  # seconds without an event before the stream sends a comment
STOP_WAIT = 10.0  # seconds answers still running at shutdown get to finish and be stored
SUMMARY_ROLE = "maintenance"
SUMMARY_TOKENS = 160  # the rolling summary's length, at most
TURN_CHARS = 2000  # of each turn, what the summariser reads
FOLD_CHARS = 12000  # of the turns folded at once, what the summariser reads
SUMMARY_INSTRUCTIONS = (
    "You keep a short running summary of a conversation between a user and an assistant. "
    "Rewrite the summary so it also covers the new turns: keep names, facts, decisions and "
    "open questions; drop pleasantries. Answer with the summary only, in at most 100 words."
)


@dataclass(frozen=True)
class Event:
    """One server-sent event: its name and its JSON payload."""

    name: str  # start, result, llm_chunk, complete, error (keepalive: a comment, no data)
    data: dict[str, Any]

    def encode(self) -> bytes:
        if self.name == "keepalive":
            return b": keepalive\n\n"  # an SSE comment: clients skip it
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


def message_out(row: dict[str, Any]) -> MessageOut:
    return MessageOut.model_validate(
        {**row, "citations": [Citation.model_validate(c) for c in row["citations"]]}
    )


class Conversations:
    def __init__(self, db: Database, answers: Answers, gateway: Gateway, enqueue: Any) -> None:
        """``enqueue(project_id, conversation_id, through)`` queues the summarise job."""
        self.db = db
        self.answers = answers
        self.gateway = gateway
        self.enqueue_summary = enqueue
        # A question with no answer after this long was left by a process that died: it
        # no longer keeps the conversation busy (an answer takes at most the call's deadline).
        self.answer_window = 2 * gateway.deadline
        self._running: set[asyncio.Task[None]] = set()
        self._turns: weakref.WeakSet[Turn] = weakref.WeakSet()

    # CRUD ------------------------------------------------------------------------------------

    async def create(
        self, project_id: uuid.UUID, user_id: uuid.UUID | None, title: str = ""
    ) -> ConversationOut:
        row = await self.db.fetch_one(
            "conversations.create", project_id=project_id, created_by=user_id, title=title
        )
        assert row is not None
        return ConversationOut.model_validate(row)

    async def get(self, project_id: uuid.UUID, conversation_id: uuid.UUID) -> ConversationDetail:
        row = await self._row(project_id, conversation_id)
        rows = await self.db.fetch_all(
            "conversations.messages", project_id=project_id, conversation_id=conversation_id
        )
        return ConversationDetail.model_validate(
            {**row, "messages": [message_out(m) for m in rows]}
        )

    async def recent(
        self,
        project_id: uuid.UUID,
        limit: int,
        before: datetime | None,
        before_id: uuid.UUID | None = None,
    ) -> ConversationList:
        rows = await self.db.fetch_all(
            "conversations.list",
            project_id=project_id,
            before=before,
            before_id=before_id,
            limit=limit + 1,
        )
        page = [ConversationOut.model_validate(r) for r in rows[:limit]]
        last = page[-1] if len(rows) > limit and page else None
        return ConversationList(
            conversations=page,
            next_before=last.updated_at if last else None,
            next_before_id=last.id if last else None,
        )

    async def delete(self, project_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        deleted = await self.db.execute(
            "conversations.delete", project_id=project_id, conversation_id=conversation_id
        )
        if not deleted:
            raise ConversationNotFound(f"no conversation {conversation_id} in this project")

    # turns -----------------------------------------------------------------------------------

    async def start_turn(
        self,
        project_id: uuid.UUID,
        user_id: uuid.UUID | None,
        conversation_id: uuid.UUID,
        body: MessageRequest,
        request_id: str | None = None,
    ) -> Turn:
        conversation = await self._row(project_id, conversation_id)
        earlier = Earlier(
            conversation["summary"],
            conversation["summarized_through"],
            [
                StoredTurn(r["seq"], r["role"], r["content"], r["tokens"])
                for r in await self.db.fetch_all(
                    "conversations.messages_after",
                    project_id=project_id,
                    conversation_id=conversation_id,
                    after=conversation["summarized_through"],
                )
            ],
        )
        prepared = await self.answers.prepare(project_id, body.ask(), earlier)
        user_message = await self._add(
            project_id,
            conversation_id,
            role="user",
            content=body.content,
            tokens=self.answers.count_tokens(body.content),
        )
        turn = Turn(self, project_id, user_id, conversation_id, prepared, user_message, request_id)
        self._turns.add(turn)
        return turn

    async def aclose(self) -> None:
        """Stop running answers and let them store what they have (the pool closes after
        this)."""
        for turn in list(self._turns):
            turn._stop.set()
        if self._running:
            await asyncio.wait(set(self._running), timeout=STOP_WAIT)

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _row(self, project_id: uuid.UUID, conversation_id: uuid.UUID) -> dict[str, Any]:
        row = await self.db.fetch_one(
            "conversations.get", project_id=project_id, conversation_id=conversation_id
        )
        if row is None:
            raise ConversationNotFound(f"no conversation {conversation_id} in this project")
        return dict(row)

    async def _add(
        self,
        project_id: uuid.UUID,
        conversation_id: uuid.UUID,
        *,
        role: str,
        content: str,
        tokens: int,
        status: str = "complete",
        citations: list[Citation] | None = None,
        usage: Usage | None = None,
        error: QuarryError | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
    ) -> MessageOut:
        row = await self.db.fetch_one(
            "conversations.add_message",
            project_id=project_id,
            conversation_id=conversation_id,
            role=role,
            content=content,
            status=status,
            citations=Jsonb([c.model_dump(mode="json") for c in citations or []]),
            model=usage.model if usage else None,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            tokens=tokens,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            error=Jsonb({"code": error.code, "detail": error.detail}) if error else None,
            busy_s=self.answer_window,
        )
        if row is None:
            if role == "user":  # busy, unless it was deleted meanwhile
                await self._row(project_id, conversation_id)
                raise ConversationBusy(
                    "the conversation is still answering its last message; send this one "
                    "when that answer has come"
                )
            raise ConversationNotFound(f"no conversation {conversation_id} in this project")
        return message_out(row)


@dataclass
class _Progress:
    """What the generation task has produced so far (read after it stops)."""

    parts: list[str] = field(default_factory=list)
    first_token: float | None = None
    end: StreamEnd | None = None
    error: QuarryError | None = None


class Turn:
    def __init__(
        self,
        conversations: Conversations,
        project_id: uuid.UUID,
        user_id: uuid.UUID | None,
        conversation_id: uuid.UUID,
        prepared: Prepared,
        user_message: MessageOut,
        request_id: str | None,
    ) -> None:
        self.conversations = conversations
        self.project_id = project_id
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.prepared = prepared
        self.user_message = user_message
        self.request_id = request_id or uuid.uuid4().hex
        self.result: TurnResult | None = None
        self.error: QuarryError | None = None
        self._stop = asyncio.Event()

    async def events(self) -> AsyncIterator[Event]:
        # Generation starts at once, in a task of its own; the events it produces wait in the
        # queue while start and the sources are sent.
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        runner = self.conversations._spawn(self._run(queue))
        try:
            yield Event(
                "start",
                {
                    "conversation_id": str(self.conversation_id),
                    "user_message": self.user_message.model_dump(mode="json"),
                    "request_id": self.request_id,
                    "model": self.prepared.model,
                },
            )
            for source in self.prepared.sources():
                yield Event("result", source.model_dump(mode="json"))
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        event = await queue.get()
                except TimeoutError:
                    yield Event("keepalive", {})  # writing is how a server notices a client left
                    continue
                if event is None:
                    return
                yield event
        finally:
            if not runner.done():
                self._stop.set()  # the reader left: stop generating, keep what was produced

    async def run(self) -> TurnResult:
        """The whole answer, not streamed. Raises the model's error once it is stored."""
        async for _ in self.events():
            pass
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    async def _run(self, queue: asyncio.Queue[Event | None]) -> None:
        progress = _Progress()
        loop = asyncio.get_running_loop()
        generation = loop.create_task(self._generate(progress, queue))
        stop = loop.create_task(self._stop.wait())
        try:
            await asyncio.wait({generation, stop}, return_when=asyncio.FIRST_COMPLETED)
            left = not generation.done()
            if left:
                generation.cancel()
            try:
                await generation
            except asyncio.CancelledError:
                if not left:
                    raise  # this task itself is being cancelled
            except Exception as exc:  # a bug: the turn still ends, and says so
                log.exception("the answer failed", conversation_id=str(self.conversation_id))
                progress.error = QuarryError(f"the answer failed: {exc}")
            queue.put_nowait(await self._store(progress, left))
        except ConversationNotFound as exc:  # not a fault: deleted by someone meanwhile
            log.info(
                "the conversation was deleted while it answered",
                conversation_id=str(self.conversation_id),
            )
            self.error = exc
            queue.put_nowait(Event("error", {"code": exc.code, "detail": exc.detail}))
        except Exception as exc:  # storing failed: the client still gets an ending
            log.exception("storing the answer failed", conversation_id=str(self.conversation_id))
            self.error = exc if isinstance(exc, QuarryError) else QuarryError(str(exc))
            queue.put_nowait(Event("error", {"code": self.error.code, "detail": self.error.detail}))
        finally:
            stop.cancel()
            generation.cancel()
            queue.put_nowait(None)

    async def _generate(self, progress: _Progress, queue: asyncio.Queue[Event | None]) -> None:
        if not self.prepared.relevant:
            return
        try:
            async for item in self.conversations.answers.stream(
                self.prepared, self.project_id, self.user_id, self.request_id
            ):
                if isinstance(item, StreamEnd):
                    progress.end = item
                    continue
                if progress.first_token is None:
                    progress.first_token = time.monotonic()
                progress.parts.append(item)
                queue.put_nowait(Event("llm_chunk", {"text": item}))
        except QuarryError as exc:  # every model failed before sending text, or refused the call
            progress.error = exc

    async def _store(self, progress: _Progress, left: bool) -> Event:
        prepared = self.prepared
        store = self.conversations
        started = prepared.started
        first_ms = (
            round((progress.first_token - started) * 1000, 2) if progress.first_token else None
        )
        timings = Timings(
            search_ms=prepared.search_ms,
            first_token_ms=first_ms,
            total_ms=round((time.monotonic() - started) * 1000, 2),
        )
        end = progress.end
        text = end.text if end is not None else "".join(progress.parts)
        error: QuarryError | None = progress.error or (end.error if end else None)
        if left and error is None:
            error = ClientDisconnected("the client disconnected before the answer was complete")
        citations: list[Citation] = []
        unknown: list[int] = []
        if not prepared.relevant:
            answer = NOTHING_FOUND
        else:
            answer, citations, unknown = prepared.cite(text)
        status = "complete" if error is None else ("partial" if answer else "failed")
        usage = end.usage if end is not None else None
        message = await store._add(
            self.project_id,
            self.conversation_id,
            role="assistant",
            content=answer,
            tokens=store.answers.count_tokens(answer) if answer else 0,
            status=status,
            citations=citations,
            usage=usage,
            error=error,
            latency_ms=timings.total_ms,
            ttft_ms=first_ms,
        )
        history = prepared.history
        if history is not None and history.fold_through:
            try:  # the answer is stored; a summary that cannot be queued now is queued later
                await store.enqueue_summary(
                    self.project_id, self.conversation_id, history.fold_through
                )
            except Exception:
                log.exception(
                    "queueing the summary failed", conversation_id=str(self.conversation_id)
                )
        if error is not None:
            self.error = error
            return Event(
                "error",
                {
                    "code": error.code,
                    "detail": error.detail,
                    "partial": answer if status == "partial" else "",
                    "message": message.model_dump(mode="json"),
                },
            )
        usage_out: AnswerUsage | None = answer_usage(usage) if usage else None
        self.result = TurnResult(
            answered=prepared.relevant,
            answer=answer,
            citations=citations,
            unknown_citations=unknown,
            usage=usage_out,
            context=prepared.context_summary(),
            history=prepared.history_summary(),
            timings=timings,
            user_message=self.user_message,
            message=message,
        )
        return Event("complete", self.result.model_dump(mode="json"))


async def summarise(
    db: Database,
    gateway: Gateway,
    project_id: uuid.UUID,
    conversation_id: uuid.UUID,
    through: int,
) -> bool:
    """Fold the turns up to ``through`` into the conversation's rolling summary. False when
    there was nothing to do (already summarised, or the conversation is gone)."""
    row = await db.fetch_one(
        "conversations.get", project_id=project_id, conversation_id=conversation_id
    )
    if row is None or row["summarized_through"] >= through:
        return False
    turns = await db.fetch_all(
        "conversations.messages_between",
        project_id=project_id,
        conversation_id=conversation_id,
        after=row["summarized_through"],
        through=through,
    )
    lines = "\n".join(
        f"{'User' if t['role'] == 'user' else 'Assistant'}: {t['content'][:TURN_CHARS]}"
        for t in turns
        if t["content"].strip()
    )[-FOLD_CHARS:]  # a long backlog: its newest part (the rest is past saving in 100 words)
    prompt = (
        f"Summary so far: {row['summary'] or '(none)'}\n\nNew turns:\n{lines}\n\n"
        "The updated summary:"
    )
    done = await gateway.generate(
        SUMMARY_ROLE,
        [{"role": "system", "content": SUMMARY_INSTRUCTIONS}, {"role": "user", "content": prompt}],
        project_id=project_id,
        max_tokens=SUMMARY_TOKENS,
        temperature=0,
    )
    summary = done.text.strip()
    if not summary:  # an empty answer must not replace what the summary held
        raise GatewayError("the maintenance model returned an empty summary; retrying later")
    await db.execute(
        "conversations.save_summary",
        project_id=project_id,
        conversation_id=conversation_id,
        summary=summary,
        through=through,
    )
    return True
