"""Users (admins manage them) and API keys (everyone manages their own)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from quarry.api.deps import PrincipalDep, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.tenancy.models import USER_NAME, ApiKey, CreatedApiKey, Invitation, Member, User
from quarry.validation import Body, ZonedTimestamp, described

router = APIRouter(tags=["users and keys"], responses=problem_responses(401, 403, 404, 409, 422))


class UserCreate(Body):
    name: str = Field(
        description="unique login name: lower-case letters, digits, '.', '_', '-', not shaped "
        "like a UUID",
        json_schema_extra=described(USER_NAME),
    )
    email: str | None = Field(default=None, max_length=320)
    is_admin: bool = False


class CreatedUser(BaseModel):
    user: User
    api_key: CreatedApiKey = Field(description="the user's first API key, shown once")


class Me(BaseModel):
    user: User
    key_id: uuid.UUID | None


class KeyCreate(Body):
    name: str = Field(default="", max_length=200)
    expires_at: ZonedTimestamp | None = Field(
        default=None,
        description="when the key stops working (with a time zone); none: never, or when the "
        "calling key expires if it does. A key cannot make one that outlives it",
    )
    user: str | None = Field(
        default=None, description="admins only: the user (id or name) to make the key for"
    )


@router.get("/me", summary="Who the API key belongs to")
async def me(rt: RuntimeDep, me: PrincipalDep) -> Me:
    return Me(user=await rt.users.get(me, str(me.user_id)), key_id=me.key_id)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user and their first API key (admin)",
)
async def create_user(body: UserCreate, rt: RuntimeDep, me: PrincipalDep) -> CreatedUser:
    created = await rt.users.create(me, body.name, email=body.email, is_admin=body.is_admin)
    return CreatedUser(user=created.user, api_key=created.api_key)


@router.get("/users", summary="List users (admin)")
async def list_users(rt: RuntimeDep, me: PrincipalDep) -> list[User]:
    return await rt.users.list_all(me)


@router.get("/users/{user}", summary="Read a user (admin, or yourself)")
async def get_user(
    user: Annotated[str, Path(description="id or name")], rt: RuntimeDep, me: PrincipalDep
) -> User:
    return await rt.users.get(me, user)


@router.post("/keys", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_key(body: KeyCreate, rt: RuntimeDep, me: PrincipalDep) -> CreatedApiKey:
    return await rt.users.create_key(me, user=body.user, name=body.name, expires_at=body.expires_at)


@router.get("/keys", summary="List your API keys (admins: any user's)")
async def list_keys(
    rt: RuntimeDep,
    me: PrincipalDep,
    user: Annotated[str | None, Query(description="admins only: id or name")] = None,
) -> list[ApiKey]:
    owner = await rt.users.get(me, user) if user else None
    return await rt.keys.list_for(owner.id if owner else me.user_id)


@router.delete("/keys/{key}", summary="Revoke an API key (by id, prefix or the whole key)")
async def revoke_key(
    key: Annotated[
        str,
        Path(description="the key's id, its visible prefix, or the whole key (a leaked one)"),
    ],
    rt: RuntimeDep,
    me: PrincipalDep,
) -> ApiKey:
    return await rt.keys.revoke(me, key)


@router.get("/invitations", summary="Projects you are invited to and have not yet answered")
async def list_invitations(rt: RuntimeDep, me: PrincipalDep) -> list[Invitation]:
    return await rt.projects.invitations(me)


@router.post(
    "/invitations/{project_id}",
    summary="Accept an invitation: become a member of the project, in the role offered",
    description=(
        "By the project's id, as `GET /invitations` lists it: a name could belong to another "
        "project by the time you answer."
    ),
)
async def accept_invitation(
    project_id: Annotated[uuid.UUID, Path(description="the project's id")],
    rt: RuntimeDep,
    me: PrincipalDep,
) -> Member:
    return await rt.projects.accept(me, project_id)


@router.delete(
    "/invitations/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Decline an invitation",
)
async def decline_invitation(
    project_id: Annotated[uuid.UUID, Path(description="the project's id")],
    rt: RuntimeDep,
    me: PrincipalDep,
) -> None:
    await rt.projects.decline(me, project_id)
