"""Jobs in a project: the echo job proves the queue end to end."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import Field

from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.jobs.queue import Job
from quarry.tenancy.models import Role
from quarry.validation import Body

router = APIRouter(
    prefix="/projects/{project}/jobs",
    tags=["jobs"],
    responses=problem_responses(401, 403, 404, 422),
)


class EchoRequest(Body):
    message: str = Field(max_length=10_000)


@router.post(
    "/echo",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Enqueue a job that echoes a message back as its result (editor)",
)
async def enqueue_echo(
    project: ProjectRef, body: EchoRequest, rt: RuntimeDep, me: PrincipalDep
) -> Job:
    found = await rt.projects.resolve(me, project, Role.editor)
    return await rt.jobs.enqueue_echo(found.id, body.message)


@router.get("/{job_id}", summary="A job's status and result")
async def get_job(
    project: ProjectRef,
    job_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    rt: RuntimeDep,
    me: PrincipalDep,
) -> Job:
    found = await rt.projects.resolve(me, project)
    return await rt.jobs.get(found.id, job_id)
