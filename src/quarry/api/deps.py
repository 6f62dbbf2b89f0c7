"""FastAPI dependencies: the process runtime and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quarry.runtime import Runtime
from quarry.tenancy.models import Principal

# auto_error=False: quarry raises its own 401s with stable codes; this only documents the scheme.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer qk_...`")


def get_runtime(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    checked = getattr(request.state, "principal", None)  # KeyFirstMiddleware's, for a large body
    if isinstance(checked, Principal):
        return checked
    principal = await runtime.keys.authenticate(request.headers.get("authorization"))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


# A project in a path: its id or its name, as every project-scoped router takes it.
ProjectRef = Annotated[str, Path(description="the project's id or name")]
