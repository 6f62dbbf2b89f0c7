"""Projects and memberships. ``{project}`` is a project's id or its name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import Field

from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.ingest.models import ProjectCounts
from quarry.tenancy.models import SLUG, Member, Project, Role
from quarry.validation import Body, described

router = APIRouter(
    prefix="/projects", tags=["projects"], responses=problem_responses(401, 403, 404, 409, 422)
)
UserRef = Annotated[str, Path(description="the user's id or name")]


class ProjectCreate(Body):
    name: str = Field(
        description="a unique slug: lower-case letters, digits and '-', not shaped like a UUID",
        json_schema_extra=described(SLUG),
    )
    description: str = Field(default="", max_length=10_000)
    analyzer: str = Field(
        default="english",
        max_length=63,
        description="text search configuration for BM25: lower-casing, stemming and stop "
        "words of a language (english, german, ...) or none of them (simple); english also "
        "makes Greek letters and their names, and British and American spellings, one term",
    )


class ProjectUpdate(Body):
    name: str | None = Field(
        default=None, description="a new unique slug", json_schema_extra=described(SLUG)
    )
    description: str | None = Field(default=None, max_length=10_000)
    analyzer: str | None = Field(
        default=None,
        max_length=63,
        description="a new analyzer; every chunk of the project is analysed again",
    )


class MemberSet(Body):
    role: Role


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a project (you own it)")
async def create_project(body: ProjectCreate, rt: RuntimeDep, me: PrincipalDep) -> Project:
    return await rt.projects.create(me, body.name, body.description, body.analyzer)


@router.get("", summary="List your projects (an admin sees all)")
async def list_projects(rt: RuntimeDep, me: PrincipalDep) -> list[Project]:
    return await rt.projects.list_for(me)


class ProjectDetail(Project, ProjectCounts):
    """A project with its document and chunk counts."""


@router.get("/{project}", summary="Read a project, with its document and chunk counts")
async def get_project(project: ProjectRef, rt: RuntimeDep, me: PrincipalDep) -> ProjectDetail:
    found = await rt.projects.resolve(me, project)
    counts = await rt.documents.counts(found.id)
    return ProjectDetail(**found.model_dump(), **counts.model_dump())


@router.patch("/{project}", summary="Rename or describe a project (owner)")
async def update_project(
    project: ProjectRef, body: ProjectUpdate, rt: RuntimeDep, me: PrincipalDep
) -> Project:
    return await rt.projects.update(
        me, project, name=body.name, description=body.description, analyzer=body.analyzer
    )


@router.delete(
    "/{project}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a project and everything in it (owner)",
)
async def delete_project(project: ProjectRef, rt: RuntimeDep, me: PrincipalDep) -> None:
    await rt.projects.delete(me, project)


@router.get("/{project}/members", summary="List a project's members")
async def list_members(project: ProjectRef, rt: RuntimeDep, me: PrincipalDep) -> list[Member]:
    return await rt.projects.members(me, project)


@router.put(
    "/{project}/members/{user}",
    summary="Change a member's role, or invite a user (owner; admins add at once)",
    description=(
        "A user who is not yet a member is invited (`pending: true`) and becomes one by "
        "accepting (`POST /invitations/{project_id}`); an admin adds them at once. Removing "
        "the user withdraws the invitation."
    ),
)
async def set_member(
    project: ProjectRef, user: UserRef, body: MemberSet, rt: RuntimeDep, me: PrincipalDep
) -> Member:
    return await rt.projects.set_member(me, project, user, body.role)


@router.delete(
    "/{project}/members/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owner, or yourself); a project keeps at least one owner",
)
async def remove_member(
    project: ProjectRef, user: UserRef, rt: RuntimeDep, me: PrincipalDep
) -> None:
    await rt.projects.remove_member(me, project, user)
