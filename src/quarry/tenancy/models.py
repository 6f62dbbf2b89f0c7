"""The tenancy nouns, as returned by services and the API."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # use fullmatch: "$" would allow a final "\n"
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def is_uuid(text: str) -> bool:
    """Whether a name could be read as an id: projects and users are found by either, the id
    first, so no name may look like one."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Role(enum.StrEnum):
    """A member's role in a project, from least to most."""

    viewer = "viewer"
    editor = "editor"
    owner = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind an API key."""

    user_id: uuid.UUID
    user_name: str
    is_admin: bool
    key_id: uuid.UUID | None = None
    # When the calling key stops working: no key it makes may outlive it.
    key_expires_at: datetime | None = None


class Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class User(Model):
    id: uuid.UUID
    name: str = Field(description="unique login name (lower-case letters, digits, . _ -)")
    email: str | None = None
    is_admin: bool = False
    created_at: datetime


class Project(Model):
    id: uuid.UUID
    name: str = Field(description="unique slug, usable wherever the id is")
    description: str = ""
    analyzer: str = Field(
        description="the text search configuration that analyses text for BM25 (a Postgres "
        "regconfig such as english, simple, german)"
    )
    created_by: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime
    role: Role | None = Field(
        default=None, description="the caller's role in the project (none for an admin outsider)"
    )


class Member(Model):
    project_id: uuid.UUID
    user_id: uuid.UUID
    user_name: str | None = None
    role: Role
    created_at: datetime
    pending: bool = Field(
        default=False,
        description="invited, not yet a member: the user has not accepted (POST /invitations)",
    )


class Invitation(Model):
    project_id: uuid.UUID
    project_name: str
    role: Role
    invited_by: str | None = Field(description="the name of the user who invited you")
    created_at: datetime


class ApiKey(Model):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str = Field(description="the visible start of the key, for recognising it")
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedApiKey(Model):
    key: ApiKey
    secret: str = Field(description="the whole key; shown this once and never again")
