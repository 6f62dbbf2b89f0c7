"""Request ids, access logs, URL checks, the body limit and the key check of large bodies, as
plain ASGI middleware (no buffering of streamed bodies)."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import parse_qsl

import structlog
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarry.api.errors import problem_response
from quarry.errors import Unauthenticated

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = structlog.get_logger("quarry.access")


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-ID when sane), echo it on the
    response, bind it to every log line written while handling the request, and log one
    access line when the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=message["status"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                response = problem_response(
                    500,
                    "internal_error",
                    "Internal error",
                    "an unexpected error occurred",
                    request_id,
                )
                await response(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _SAFE_ID.fullmatch(text) else None
    return None


class UrlCheckMiddleware:
    """Refuse a URL whose path or query holds a NUL (``%00``) with a 422 naming where, before
    any route sees it. Path and query values reach SQL (a project's name, a user, a filter),
    and Postgres' text cannot hold NUL: it failed the statement, a 500. Body values are
    checked by ``quarry.validation.Body``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = _nul_in_url(scope) if scope["type"] == "http" else None
        if where is None:
            await self.app(scope, receive, send)
            return
        response = problem_response(
            422,
            "validation_error",
            "Invalid request",
            f"invalid value for {where}",
            scope.get("state", {}).get("request_id"),
            errors=[{"field": where, "message": "must not contain NUL (%00)"}],
        )
        await response(scope, receive, send)


def _nul_in_url(scope: Scope) -> str | None:
    """Where a NUL is in the request's URL: "path", "query.<name>", or None."""
    if "\x00" in scope["path"]:
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return "query" if "\x00" in name else f"query.{name}"
    return None


class BodyTooLarge(HTTPException):
    """Raised from a request's ``receive`` once its body passes the limit; FastAPI lets an
    HTTPException from reading the body through, and the error handlers make it a 413."""

    def __init__(self, max_bytes: int, setting: str) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes ({setting})")


class BodyLimitMiddleware:
    """Refuse a request body over its limit with a 413 before it is all read: JSON bodies
    are read whole into memory before validation, and a multipart upload's files are spooled
    to disk before any handler sees them. The limit is ``max_bytes``
    (QUARRY_MAX_REQUEST_BYTES), or ``max_multipart_bytes`` (QUARRY_MAX_UPLOAD_REQUEST_BYTES)
    for a multipart upload of files (``POST /projects/{p}/documents``), all its files
    together; each file is also held to
    QUARRY_MAX_UPLOAD_BYTES by the handler. A declared Content-Length over the limit is refused
    before any of the body is read; a body sent in chunks, once its running count passes it."""

    # The one route that takes files. Its limit follows the route, not the Content-Type a
    # client chooses: another route sent as multipart is still read whole into memory.
    UPLOAD_PATH = re.compile(r"/projects/[^/]+/documents/?")

    def __init__(self, app: ASGIApp, max_bytes: int, max_multipart_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_multipart_bytes = max_multipart_bytes

    def _upload(self, scope: Scope) -> bool:
        return (
            scope["method"] == "POST"
            and _header(scope, b"content-type").startswith("multipart/")
            and self.UPLOAD_PATH.fullmatch(scope["path"]) is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._upload(scope):
            limit, setting = self.max_multipart_bytes, "QUARRY_MAX_UPLOAD_REQUEST_BYTES"
        else:
            limit, setting = self.max_bytes, "QUARRY_MAX_REQUEST_BYTES"
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            detail = str(BodyTooLarge(limit, setting).detail)
            request_id = scope.get("state", {}).get("request_id")
            # The same problem the error handlers make of a BodyTooLarge from a streamed body.
            response = problem_response(413, "payload_too_large", detail, detail, request_id)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        await self.app(scope, counted, send)


class KeyFirstMiddleware:
    """Check the API key of a request with a large body before any of the body is read.

    FastAPI reads and parses a body before it resolves a route's dependencies, the key check
    among them, so without this anyone could make the server parse 64 MiB of JSON or spool
    an upload to disk before answering 401. A request whose declared body is over
    ``UNCHECKED_BODY_BYTES``, or whose body is sent in chunks of no declared length, has its
    key checked here: a 401 without reading its body, or the principal is left in the
    request's state for the route (``get_principal``). Smaller bodies go on as before; their
    routes check the key."""

    UNCHECKED_BODY_BYTES = 64 * 1024
    PUBLIC_PATHS = frozenset(
        {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._large(scope):
            await self.app(scope, receive, send)
            return
        runtime = scope["app"].state.runtime
        state = scope.setdefault("state", {})
        try:
            state["principal"] = await runtime.keys.authenticate(
                _header(scope, b"authorization", lower=False) or None
            )
        except Unauthenticated as exc:
            response = problem_response(
                exc.status, exc.code, exc.title, exc.detail, state.get("request_id")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _large(self, scope: Scope) -> bool:
        if scope["path"] in self.PUBLIC_PATHS:  # they need no key, and read no body
            return False
        declared = _header(scope, b"content-length")
        if declared:
            return not declared.isdigit() or int(declared) > self.UNCHECKED_BODY_BYTES
        # Without a length, a body is chunked (of any length) or absent.
        return bool(_header(scope, b"transfer-encoding"))


def _header(scope: Scope, name: bytes, *, lower: bool = True) -> str:
    for key, value in scope["headers"]:
        if key == name:
            text = str(value.decode("latin-1")).strip()
            return text.lower() if lower else text
    return ""
