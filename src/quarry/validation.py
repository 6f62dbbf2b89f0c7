"""Checks every request body shares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


def contains_nul(value: Any) -> bool:
    """Whether a NUL character hides anywhere in JSON-like data (keys included). Postgres text
    and jsonb cannot hold one, so it must be refused before it reaches the database."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


class Body(BaseModel):
    """A request body: refuses NUL characters anywhere in it with a 422."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if contains_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data
