"""Users: created by admins; the first admin is made at first start."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg import errors as pg_errors

from quarry.auth.service import ApiKeys
from quarry.db.database import Database
from quarry.errors import AdminRequired, InvalidInput, UserNameTaken, UserNotFound
from quarry.tenancy.models import USER_NAME, CreatedApiKey, Principal, User, is_uuid

ADMIN_NAME = "admin"


@dataclass(frozen=True)
class NewUser:
    user: User
    api_key: CreatedApiKey


class Users:
    def __init__(self, db: Database, keys: ApiKeys) -> None:
        self.db = db
        self.keys = keys

    async def create(
        self, actor: Principal, name: str, *, email: str | None = None, is_admin: bool = False
    ) -> NewUser:
        """Create a user and their first API key (admins only)."""
        _require_admin(actor)
        return await self._create(
            name, email=email, is_admin=is_admin, key_expires_at=actor.key_expires_at
        )

    async def _create(
        self,
        name: str,
        *,
        email: str | None,
        is_admin: bool,
        key_expires_at: datetime | None = None,
    ) -> NewUser:
        if not USER_NAME.fullmatch(name) or is_uuid(name):
            raise InvalidInput(
                "name must be 1-63 lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, and not shaped like a UUID",
                field="name",
            )
        async with self.db.transaction() as conn:
            try:
                row = await self.db.fetch_one(
                    "users.create", conn, name=name, email=email, is_admin=is_admin
                )
            except pg_errors.UniqueViolation:
                raise UserNameTaken(f"a user named {name!r} already exists") from None
            assert row is not None
            user = User(**row)
            # The first key lives no longer than the key of the admin who makes the user.
            key = await self.keys.create(
                user.id, name="initial", not_after=key_expires_at, conn=conn
            )
        return NewUser(user=user, api_key=key)

    async def create_key(
        self,
        actor: Principal,
        *,
        user: str | None = None,
        name: str = "",
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        """A key for the actor, or for ``user`` (id or name; admins only), that outlives
        neither the given expiry nor the actor's own key."""
        owner = await self.get(actor, user) if user else None
        return await self.keys.create(
            owner.id if owner else actor.user_id,
            name=name,
            expires_at=expires_at,
            not_after=actor.key_expires_at,
        )

    async def list_all(self, actor: Principal) -> list[User]:
        _require_admin(actor)
        return [User(**row) for row in await self.db.fetch_all("users.list")]

    async def get(self, actor: Principal, ref: str) -> User:
        """A user by id or name: admins see everyone, others only themselves."""
        user = await self.find(ref)
        if user is None or (user.id != actor.user_id and not actor.is_admin):
            raise UserNotFound(f"no user {ref!r}")
        return user

    async def find(self, ref: str) -> User | None:
        try:
            row = await self.db.fetch_one("users.get", user_id=uuid.UUID(ref))
        except ValueError:
            row = await self.db.fetch_one("users.get_by_name", name=ref)
        return User(**row) if row else None

    async def bootstrap_admin(self, key_file: Path) -> NewUser | None:
        """On a database with no users, make the admin and write its key to ``key_file`` (0600).

        Runs under an advisory lock, so processes starting together make exactly one admin.
        """
        async with self.db.transaction() as conn:
            await self.db.execute("users.lock_bootstrap", conn)
            count = await self.db.fetch_one("users.count", conn)
            if count is None or count["n"] > 0:
                return None
            row = await self.db.fetch_one(
                "users.create", conn, name=ADMIN_NAME, email=None, is_admin=True
            )
            assert row is not None
            admin = User(**row)
            key = await self.keys.create(admin.id, name="admin", conn=conn)
            write_secret_file(key_file, key.secret)
        return NewUser(user=admin, api_key=key)


def write_secret_file(path: Path, secret: str) -> None:
    """Write a file only its owner can read, replacing any earlier one atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.replace(tmp, path)


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise AdminRequired("only an admin may manage users")
