"""Request ids, access logs, URL checks and the body limit, as plain ASGI middleware (no
buffering of streamed bodies)."""

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
    for a multipart upload, all its files together; each file is also held to
    QUARRY_MAX_UPLOAD_BYTES by the handler. A declared Content-Length over the limit is refused
    before any of the body is read; a body sent in chunks, once its running count passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_multipart_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_multipart_bytes = max_multipart_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _header(scope, b"content-type").startswith("multipart/"):
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


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1").strip().lower())
    return ""
