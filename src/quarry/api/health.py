"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from quarry.api.deps import RuntimeDep
from quarry.db import migrate
from quarry.errors import Unauthenticated
from quarry.modelfiles import check_models
from quarry.runtime import Runtime

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, Check]


@router.get("/health", summary="The process is up (no dependencies checked)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Ready to serve: database, migrations, a live worker and loadable models",
    description=(
        "Needs no key. Each check's `detail` says why it failed (the database's error, a "
        "model file's path) only to an admin's key; anyone else reads `ok` or `not ready`, "
        "and the details of a failed check go to the log (where they are all there is while "
        "the database, which checks keys, is unreachable)."
    ),
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is not ready"}},
)
async def ready(request: Request, runtime: RuntimeDep) -> JSONResponse:
    checks = await readiness(runtime)
    ok = all(check.ok for check in checks.values())
    failed = {name: check.detail for name, check in checks.items() if not check.ok}
    if failed:
        log.warning("not ready", **failed)
    if not checks["database"].ok or not await _admin(request, runtime):
        checks = {
            name: Check(ok=check.ok, detail="ok" if check.ok else "not ready")
            for name, check in checks.items()
        }
    body = Readiness(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _admin(request: Request, runtime: Runtime) -> bool:
    header = request.headers.get("authorization")
    if not header:
        return False
    try:
        return (await runtime.keys.authenticate(header)).is_admin
    except Unauthenticated:
        return False
    except Exception:  # the probe answers whatever the key check meets
        log.warning("ready: the key could not be checked", exc_info=True)
        return False


async def readiness(runtime: Runtime) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    try:
        async with asyncio.timeout(runtime.settings.db_connect_timeout):
            async with runtime.db.pool.connection() as conn:
                await conn.execute("SELECT 1")
                state = await migrate.status(conn)
                heartbeat = await runtime.db.fetch_one("jobs.last_heartbeat", conn)
    except Exception as exc:
        reason = f"unreachable: {type(exc).__name__}: {exc}".strip()
        checks["database"] = Check(ok=False, detail=reason)
        checks["migrations"] = Check(ok=False, detail="unknown: database unreachable")
        checks["worker"] = Check(ok=False, detail="unknown: database unreachable")
    else:
        checks["database"] = Check(ok=True, detail="reachable")
        checks["migrations"] = Check(ok=state.current, detail=state.describe())
        checks["worker"] = _worker_check(heartbeat, runtime.settings.ready_worker_stale_after)
    models = await asyncio.to_thread(check_models, runtime.settings)
    checks["models"] = Check(
        ok=all(m.ok for m in models),
        detail="; ".join(f"{m.name}: {m.detail} ({m.path})" for m in models),
    )
    return checks


def _worker_check(heartbeat: dict[str, Any] | None, stale_after: float) -> Check:
    age = heartbeat["age_s"] if heartbeat else None
    if age is None:
        return Check(ok=False, detail="no worker has registered: start `quarry worker`")
    if age > stale_after:
        return Check(ok=False, detail=f"last worker heartbeat {age:.0f}s ago")
    return Check(
        ok=True,
        detail=f"{heartbeat['workers'] if heartbeat else 0} worker(s), "
        f"last heartbeat {age:.1f}s ago",
    )
