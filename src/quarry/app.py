"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from quarry import __version__
from quarry.api import (
    answers,
    conversations,
    documents,
    health,
    jobs,
    openai,
    projects,
    search,
    usage,
    users,
)
from quarry.api.errors import install_error_handlers
from quarry.api.middleware import (
    BodyLimitMiddleware,
    KeyFirstMiddleware,
    RequestIdMiddleware,
    UrlCheckMiddleware,
)
from quarry.runtime import Runtime, background_worker, freeze_startup_heap, open_runtime
from quarry.settings import Settings

log = structlog.get_logger(__name__)

DESCRIPTION = """
quarry ingests a team's documents, keeps them searchable with hybrid search, and answers
questions over them with cited, streamed answers.

Authenticate with an API key: `Authorization: Bearer qk_...`. Everything except `/health` and
`/ready` needs one. Errors are `application/problem+json` with a stable `code`. A project you
cannot access answers 404, exactly like one that does not exist.
"""


# Every route of the API, by router.
ROUTERS = (
    health.router,
    users.router,
    projects.router,
    documents.router,
    search.router,
    jobs.router,
    usage.router,
    answers.router,
    conversations.router,
    openai.router,
)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Given a runtime, the app uses it; otherwise it opens its own at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            rt = runtime
            if rt is None:  # served by an ASGI server of the deployer's choosing
                rt = await stack.enter_async_context(open_runtime(settings, load_models=True))
                freeze_startup_heap()
            app.state.runtime = rt
            if settings.run_worker_in_process:
                await stack.enter_async_context(background_worker(rt, "in-process", sweeps=True))
            yield

    app = FastAPI(
        title="quarry",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_multipart_bytes=settings.max_upload_request_bytes,
    )
    app.add_middleware(KeyFirstMiddleware)  # outside the body limit: a stranger gets a 401
    app.add_middleware(UrlCheckMiddleware)
    app.add_middleware(RequestIdMiddleware)  # the outermost: every answer carries an id
    for router in ROUTERS:
        app.include_router(router)
    return app
