"""quarry ask, quarry chat: answers streamed to the terminal, then their sources."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from quarry.answers.ask import NOTHING_FOUND
from quarry.answers.chat import Turn
from quarry.answers.models import AskRequest, Citation, MessageRequest
from quarry.cli.common import JSON_OPTION, acting, err, out, print_json, run, settings_from
from quarry.errors import InvalidInput, QuarryError
from quarry.gateway.types import StreamEnd
from quarry.runtime import background_worker
from quarry.search.models import Mode
from quarry.tenancy.models import Role

T = TypeVar("T", bound=BaseModel)
EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}


def register(app: typer.Typer) -> None:
    app.command(name="ask")(ask)
    app.command(name="chat")(chat)


def _checked(model: type[T], **fields: Any) -> T:
    """The request model, or the CLI's clean error naming the field that is wrong."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "question"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from None


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question."),
    project: str = typer.Option(..., "--project", "-p", help="The project's name or id."),
    mode: Mode = typer.Option(Mode.hybrid, "--mode", "-m", help="bm25, vector or hybrid."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Answer a question from a project's documents: the answer streams as the model writes
    it, then the sources it cites are listed."""
    settings = settings_from(ctx)

    async def go() -> None:
        request = _checked(AskRequest, question=question, mode=mode)
        async with acting(settings, load_models=True) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.viewer)
            if as_json:
                print_json(await rt.answers.ask(found.id, me.user_id, request))
                return
            prepared = await rt.answers.prepare(found.id, request)
            if not prepared.relevant:
                out.print(NOTHING_FOUND)
                return
            end: StreamEnd | None = None
            async for item in rt.answers.stream(prepared, found.id, me.user_id):
                if isinstance(item, StreamEnd):
                    end = item
                else:
                    _write(item)
            _write("\n")
            assert end is not None
            _, citations, unknown = prepared.cite(end.text)
            _sources(citations, unknown)
            if end.error is not None:
                err.print(f"the answer broke off: {end.error.detail}", markup=False)
                raise SystemExit(1)

    run(go())


def chat(
    ctx: typer.Context,
    project: str = typer.Option(..., "--project", "-p", help="The project's name or id."),
    conversation: uuid.UUID | None = typer.Option(
        None, "--conversation", "-c", help="Continue this conversation (default: a new one)."
    ),
    mode: Mode = typer.Option(Mode.hybrid, "--mode", "-m", help="bm25, vector or hybrid."),
) -> None:
    """A conversation with a project in the terminal: type a message, read the answer as it
    streams; an empty line or /exit ends it. The conversation is stored (see its id at the
    start) and can be continued with --conversation."""
    settings = settings_from(ctx)

    async def go() -> None:
        async with acting(settings, load_models=True) as (rt, me):
            found = await rt.projects.resolve(me, project, Role.viewer)
            if conversation is None:
                cid = (await rt.conversations.create(found.id, me.user_id)).id
            else:
                cid = (await rt.conversations.get(found.id, conversation)).id
            err.print(f"[dim]conversation {cid} (an empty line or /exit ends it)[/]", markup=True)
            async with background_worker(rt, "chat"):  # folds old turns into the summary
                while True:
                    line = await asyncio.to_thread(_read_line)
                    if line is None or not line.strip() or line.strip() in EXIT_WORDS:
                        return
                    try:  # a message refused for its input ends the turn, not the session
                        body = _checked(MessageRequest, content=line.strip(), mode=mode)
                        turn = await rt.conversations.start_turn(found.id, me.user_id, cid, body)
                    except QuarryError as exc:
                        err.print(f"{exc.detail} ({exc.code})", markup=False)
                        continue
                    await _show(turn)

    run(go())


async def _show(turn: Turn) -> None:
    async for event in turn.events():
        if event.name == "llm_chunk":
            _write(event.data["text"])
        elif event.name == "complete":
            result = event.data
            if not result["answered"]:
                _write(result["answer"])
            _write("\n")
            _sources(
                [Citation.model_validate(c) for c in result["citations"]],
                result["unknown_citations"],
            )
        elif event.name == "error":
            _write("\n")
            err.print(f"{event.data['code']}: {event.data['detail']}", markup=False)


def _read_line() -> str | None:
    try:
        return input("> " if sys.stdin.isatty() else "")
    except EOFError:
        return None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _sources(citations: list[Citation], unknown: list[int]) -> None:
    for c in citations:
        page = f", page {c.page}" if c.page is not None else ""
        snippet = " ".join(c.quote.split())[:100]
        out.print(
            f"[{c.number}] {c.document_title or c.document_id}{page}: {snippet}…", markup=False
        )
    if unknown:
        err.print(f"(removed citations that name no source: {unknown})")
