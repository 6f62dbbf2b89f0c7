"""API keys as a service: create, list, revoke, authenticate."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from quarry.auth import keys
from quarry.db.database import Conn, Database
from quarry.errors import (
    ApiKeyNotFound,
    ExpiredApiKey,
    InvalidApiKey,
    InvalidInput,
    MissingApiKey,
    RevokedApiKey,
)
from quarry.tenancy.models import ApiKey, CreatedApiKey, Principal
from quarry.validation import zoned_utc


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        user_id: uuid.UUID,
        *,
        name: str = "",
        expires_at: datetime | None = None,
        not_after: datetime | None = None,
        conn: Conn | None = None,
    ) -> CreatedApiKey:
        """A new key; ``not_after``: the expiry of the key that asks for it, which the new one
        may not outlive (it gets that expiry when none is given), or a short-lived key could
        make itself a permanent one."""
        if expires_at is not None:
            try:  # the rule the API's ZonedTimestamp applies, for every other caller too
                expires_at = zoned_utc(expires_at)
            except ValueError as exc:
                raise InvalidInput(f"expires_at: {exc}", field="expires_at") from None
            if expires_at <= datetime.now(UTC):
                raise InvalidInput("expires_at must be in the future", field="expires_at")
        if expires_at is None:
            expires_at = not_after
        elif not_after is not None and expires_at > not_after:
            raise InvalidInput(
                f"expires_at is after {not_after.isoformat()}, when the key making it expires; "
                "a key cannot make one that outlives it",
                field="expires_at",
            )
        new = keys.generate()
        row = await self.db.fetch_one(
            "api_keys.create",
            conn,
            user_id=user_id,
            name=name,
            prefix=new.prefix,
            secret_hash=new.hash,
            expires_at=expires_at,
        )
        assert row is not None
        return CreatedApiKey(key=ApiKey(**row), secret=new.secret)

    async def authenticate(self, authorization: str | None) -> Principal:
        """Turn an ``Authorization`` header value into a Principal, or raise a 401 error."""
        if not authorization or not authorization.strip():
            raise MissingApiKey("send an API key as 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise InvalidApiKey("the Authorization header must be 'Bearer <key>'")
        return await self.authenticate_key(key)

    async def authenticate_key(self, key: str) -> Principal:
        prefix = keys.prefix_of(key)
        if prefix is None:
            raise InvalidApiKey("the API key is malformed")
        row = await self.db.fetch_one("api_keys.get_for_auth", prefix=prefix)
        if row is None or not keys.matches(key, bytes(row["secret_hash"])):
            raise InvalidApiKey("the API key is not valid")
        if row["revoked_at"] is not None:
            raise RevokedApiKey("the API key has been revoked")
        if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
            raise ExpiredApiKey("the API key has expired")
        await self.db.execute("api_keys.touch", key_id=row["id"])
        return Principal(
            user_id=row["user_id"],
            user_name=row["user_name"],
            is_admin=row["is_admin"],
            key_id=row["id"],
            key_expires_at=row["expires_at"],
        )

    async def list_for(self, user_id: uuid.UUID) -> list[ApiKey]:
        rows = await self.db.fetch_all("api_keys.list_for_user", user_id=user_id)
        return [ApiKey(**row) for row in rows]

    async def find(self, actor: Principal, ref: str) -> ApiKey:
        """A key by id, visible prefix or whole secret that the actor may manage (own keys;
        admins: all). A whole key is found only if its secret is right, and never echoed."""
        row = None
        prefix = keys.prefix_of(ref)
        if prefix is not None:
            known = await self.db.fetch_one("api_keys.get_for_auth", prefix=prefix)
            if known is not None and keys.matches(ref, bytes(known["secret_hash"])):
                row = await self.db.fetch_one("api_keys.get", key_id=known["id"])
        else:
            try:
                row = await self.db.fetch_one("api_keys.get", key_id=uuid.UUID(ref))
            except ValueError:
                row = await self.db.fetch_one("api_keys.get_by_prefix", prefix=ref)
        if row is None or (row["user_id"] != actor.user_id and not actor.is_admin):
            raise ApiKeyNotFound(f"no API key {keys.redact(ref)!r}")
        return ApiKey(**row)

    async def revoke(self, actor: Principal, ref: str) -> ApiKey:
        key = await self.find(actor, ref)
        row = await self.db.fetch_one("api_keys.revoke", key_id=key.id)
        assert row is not None
        return ApiKey(**row)
