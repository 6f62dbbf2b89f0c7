"""The optional exact-match response cache for temperature-0 calls, kept in Postgres.

The key is a SHA-256 over the project, the model (its name and whole configuration), the
messages, the parameters and the schema, in canonical JSON: any difference is a miss. Entries
expire after a TTL; expired ones are purged now and then by writers.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from quarry.db.database import Database
from quarry.gateway.config import ModelConfig
from quarry.gateway.types import Request

PURGE_ONE_IN = 100  # writes that also delete expired entries


def cache_key(model: str, config: ModelConfig, request: Request, project_id: UUID | None) -> bytes:
    """Scoped by project (one tenant's answers are never served to another, nor could the
    timing of a hit tell one tenant what another asked) and by the model's whole configuration
    (two servers that both call their model "default" are not one model)."""
    material = {
        "project": str(project_id) if project_id else None,
        "model": model,
        "config": config.model_dump(mode="json"),
        "messages": [m.as_dict() for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stop": list(request.stop),
        "seed": request.seed,
        "schema": request.schema,
        "schema_name": request.schema_name if request.schema is not None else None,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class CachedReply:
    key: bytes
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None


class ResponseCache:
    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._rng = random.Random()  # noqa: S311 - sampling purges, not security

    async def get(self, keys: list[bytes]) -> dict[bytes, CachedReply]:
        rows = await self.db.fetch_all("model_cache.get", keys=keys)
        return {bytes(row["key"]): _reply(row) for row in rows}

    async def put(
        self,
        key: bytes,
        model: str,
        text: str,
        input_tokens: int,
        output_tokens: int,
        finish_reason: str | None,
    ) -> None:
        response = {
            "text": text,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "finish_reason": finish_reason,
        }
        await self.db.execute(
            "model_cache.put", key=key, model=model, response=Jsonb(response), ttl=self.ttl
        )
        if self._rng.randrange(PURGE_ONE_IN) == 0:
            await self.db.execute("model_cache.purge")


def _reply(row: dict[str, Any]) -> CachedReply:
    response = row["response"]
    return CachedReply(
        key=bytes(row["key"]),
        model=row["model"],
        text=response["text"],
        input_tokens=int(response["input_tokens"]),
        output_tokens=int(response["output_tokens"]),
        finish_reason=response.get("finish_reason"),
    )
