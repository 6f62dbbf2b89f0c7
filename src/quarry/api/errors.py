"""The one place errors become HTTP: RFC 9457 problem+json with a stable ``code``."""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from quarry.errors import ProjectNotFound, QuarryError, Unauthenticated

PROBLEM = "application/problem+json"
log = structlog.get_logger(__name__)

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(
    status: int, code: str, title: str, detail: str, request_id: str | None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"urn:quarry:error:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def problem(
    request: Request, status: int, code: str, title: str, detail: str, **extra: Any
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return problem_response(status, code, title, detail, request_id, **extra)


async def _quarry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuarryError)
    if exc.status >= 500:
        log.error("request failed", code=exc.code, detail=exc.detail)
    elif not isinstance(exc, Unauthenticated):
        log.info("request refused", code=exc.code, detail=exc.detail)
    return problem(request, exc.status, exc.code, exc.title, exc.detail, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": "body", "message": _not_json(error)}
        if error.get("type") == "json_invalid"
        else {"field": _field(error), "message": error["msg"]}
        for error in exc.errors()
    ]
    fields = ", ".join(error["field"] for error in errors)
    return problem(
        request,
        422,
        "validation_error",
        "Invalid request",
        f"invalid value for {fields}",
        errors=errors,
    )


def _not_json(error: Any) -> str:
    """FastAPI's JSON decode error, located: its place is a character, not a field."""
    reason = (error.get("ctx") or {}).get("error", "not JSON")
    return f"the body is not JSON: {reason} (character {error['loc'][-1]})"


def _field(error: Any) -> str:
    """Where in the request the error is: its location, and below it the place a check of
    the whole body names (``quarry.validation.Body``)."""
    parts = [str(part) for part in error["loc"] if part != "body"]
    inner = (error.get("ctx") or {}).get("field")
    if inner:
        parts.append(str(inner))
    return ".".join(parts) or "body"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    unreadable = _unreadable_json(exc)
    if unreadable:
        # FastAPI answers a JSON body its parser fails on in other ways than a syntax error
        # with a 400 of its own, where a body that is not JSON gets a 422: the same invalid
        # body, so the same answer.
        errors = [{"field": "body", "message": unreadable}]
        detail = "invalid value for body"
        return problem(request, 422, "validation_error", "Invalid request", detail, errors=errors)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    response = problem(request, exc.status_code, code, str(exc.detail), str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route on the path only, where
        # this API often has one route per method (GET and POST /keys): the path's methods
        # are those the OpenAPI description gives it (RFC 9110 wants them all).
        allowed = _methods_of(request.app, request.url.path)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _unreadable_json(exc: HTTPException) -> str | None:
    """Why FastAPI's 400 for a body it could not parse is a JSON body quarry refuses: not
    UTF-8 (JSON is UTF-8, RFC 8259), nested past the parser's depth, or a number past
    Python's 4300 digits."""
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not JSON: JSON is UTF-8"
    if isinstance(cause, RecursionError):
        return "the body is JSON nested too deeply to read"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "the body is JSON with a number of more than 4300 digits"
    return None


def _methods_of(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI description has for every path template matching ``path``."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(name.upper() for name in operations if name.upper() in _METHODS)
    return sorted(methods)


async def _project_gone(request: Request, exc: Exception) -> JSONResponse:
    """A write that names a project deleted since the request found it (every project-scoped
    row references its project): the project is not found, as it would be a moment later.
    Any other broken reference is a bug, answered as one."""
    assert isinstance(exc, pg_errors.ForeignKeyViolation)
    constraint = exc.diag.constraint_name or ""
    if not constraint.endswith("_project_id_fkey"):
        raise exc
    return await _quarry_error(request, ProjectNotFound("the project was deleted"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(QuarryError, _quarry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(pg_errors.ForeignKeyViolation, _project_gone)
    # Anything else is caught by RequestIdMiddleware, which answers 500 with the request id.
    _describe_problems(app)


def _describe_problems(app: FastAPI) -> None:
    """Put ``Problem`` among the OpenAPI description's schemas, where the responses of
    ``problem_responses`` refer to it under application/problem+json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class FieldError(BaseModel):
    field: str = Field(description="where in the request, e.g. filters.metadata.year")
    message: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details. Clients switch on ``code``. Some errors carry
    members of their own beside these (``rejected``, ``attempts``, ``url``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:quarry:error:project_not_found"])
    title: str
    status: int
    detail: str
    code: str = Field(description="stable machine-readable error code")
    request_id: str | None = Field(description="also in the X-Request-ID response header")
    field: str | None = Field(default=None, description="the one field at fault, where one is")
    errors: list[FieldError] | None = Field(
        default=None, description="each field at fault (validation_error)"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a router can return."""
    described = {
        401: "missing, malformed, unknown, expired or revoked API key",
        403: "the caller's role does not allow this",
        404: "not found, or not visible to the caller",
        409: "conflicts with the current state",
        413: "the document is larger than QUARRY_MAX_UPLOAD_BYTES (document_too_large), or "
        "the request than QUARRY_MAX_REQUEST_BYTES or, for an upload, "
        "QUARRY_MAX_UPLOAD_REQUEST_BYTES (payload_too_large)",
        415: "the document's type is not supported",
        422: "invalid input; `field` or `errors` name what is wrong",
        502: "the model's answer could not be used (invalid_model_output, stream_interrupted)",
        503: "a part this needs is not configured or not loaded, or no model of the role "
        "could serve the call (models_unavailable)",
    }
    # Under the media type the answer has (FastAPI's "model" would describe application/json,
    # which no error is sent as).
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {
        status: {"description": described[status], "content": {PROBLEM: schema}}
        for status in statuses
    }
