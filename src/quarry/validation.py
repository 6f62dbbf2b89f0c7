"""What a value must be to reach Postgres: the checks every request body shares, the
timestamps clients send, and text from elsewhere (documents, models) made storable."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, model_validator
from pydantic_core import PydanticCustomError

MAX_DEPTH = 64  # objects and lists within each other in any value quarry stores


def unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where in a JSON-like value Postgres could not store it, and why; None if it can.

    Its text and jsonb hold neither NUL nor a lone UTF-16 surrogate (JSON's ``"\\ud800"``
    escape decodes to one), and jsonb has no NaN or Infinity (JSON has no such numbers, but
    Python's parser takes them, and turns 1e400 into Infinity). Each would fail the statement
    that writes or compares it, so it must be refused before it reaches the database. The
    place is a dotted path of keys and list positions below ``path``; a bad key is reported
    at its object, so that the key itself is never echoed back. Walked with a stack of its
    own, not by recursion: a body may nest as deep as the JSON parser allows. Nesting deeper
    than ``MAX_DEPTH`` is refused too: stored, it could not be read back (Pydantic's
    serializer stops at 255 levels, and every page listing it would fail)."""
    pending: list[tuple[Any, str, int]] = [(value, path, 0)]
    while pending:
        item, place, depth = pending.pop()
        if isinstance(item, dict | list | tuple) and depth >= MAX_DEPTH:
            return place, f"values must not nest more than {MAX_DEPTH} levels deep"
        if isinstance(item, dict):
            for key in item:
                reason = _unstorable_scalar(key)
                if reason:
                    return place, f"a key: {reason}"
            pending.extend((v, _below(place, k), depth + 1) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            pending.extend(
                (v, _below(place, i), depth + 1) for i, v in reversed(list(enumerate(item)))
            )
        else:
            reason = _unstorable_scalar(item)
            if reason:
                return place, reason
    return None


def _unstorable_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return "text must not contain NUL (\\u0000) characters"
        if not _encodable(value):
            return "text must be valid Unicode, without lone surrogates (\\ud800-\\udfff)"
    elif isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite, not NaN, Infinity or past 1.8e308"
    return None


def _below(path: str, step: object) -> str:
    return f"{path}.{step}" if path else str(step)


_SURROGATES = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with what Postgres' text cannot hold replaced, one character for one so that
    offsets into it stay true: NUL by a space, a lone surrogate by U+FFFD. For text quarry
    extracts or receives from elsewhere, where refusing it would lose the rest."""
    if "\x00" in text:
        text = text.replace("\x00", " ")
    if not _encodable(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _encodable(text: str) -> bool:
    """Whether ``text`` is UTF-8 (holds no lone surrogate); ASCII is, without a look."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Body(BaseModel):
    """A request body: refuses what Postgres cannot store anywhere in it (``unstorable``)
    with a 422 naming the place (``field`` in the error's context)."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        found = unstorable(data)
        if found:
            field, reason = found
            raise PydanticCustomError("unstorable", reason, {"field": field})
        return data


def described(rule: re.Pattern[str]) -> dict[str, Any]:
    """A name rule (matched whole) for a field's OpenAPI description only, for clients to
    check names before sending them. The service checks it, with what a pattern cannot say
    (a project name not shaped like a UUID), and answers ``invalid_input``."""
    return {"pattern": f"^{rule.pattern}$"}


def utc(value: datetime) -> datetime:
    """A client's timestamp in UTC; one without a time zone is taken as UTC.

    Any offset ISO 8601 allows (up to 23:59) parses, but Postgres reads offsets only up to
    15:59, and a time near either end of Python's years 1-9999 can lie outside them in UTC,
    where Postgres stores it and Python can no longer read it back. In UTC both are settled
    here, as a 422 (``ValueError``) rather than a failed statement."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time must lie between the years 1 and 9999 in UTC") from None


def zoned_utc(value: datetime) -> datetime:
    """``utc``, for a timestamp that must name its time zone."""
    if value.tzinfo is None:
        raise ValueError("the time must carry a time zone (Z or an offset such as +02:00)")
    return utc(value)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_8601(value: Any) -> Any:
    """Refuse what pydantic would otherwise read as a Unix time: a number, or text that is
    one (``before=0.5`` is 1970-01-01T00:00:00.5). The API documents its timestamps as ISO
    8601 date-times (``format: date-time``); a number is far more often a mistake (seconds
    against milliseconds, a count sent to the wrong field) than a time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("a time must be ISO 8601 text, such as 2024-05-01T12:00:00Z")
    return value


# A timestamp from a client as ISO 8601 text, in UTC (without a zone: UTC).
Timestamp = Annotated[datetime, BeforeValidator(iso_8601), AfterValidator(utc)]
# A timestamp from a client as ISO 8601 text that must carry its time zone, in UTC.
ZonedTimestamp = Annotated[datetime, BeforeValidator(iso_8601), AfterValidator(zoned_utc)]
