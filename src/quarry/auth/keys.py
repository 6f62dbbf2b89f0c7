"""The API key format. A key is ``qk_<prefix>_<secret>``.

The prefix (10 base32 characters) is stored in clear and shown in listings, so a person can
tell keys apart; the whole key is stored only as its SHA-256. Keys carry 256 bits of randomness,
so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "qk"
_PATTERN = re.compile(r"qk_([a-z2-7]{10})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str
    hash: bytes


def generate() -> NewKey:
    token = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
    whole = f"{SCHEME}_{token}_{secrets.token_urlsafe(32)}"
    return NewKey(prefix=f"{SCHEME}_{token}", secret=whole, hash=digest(whole))


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def prefix_of(key: str) -> str | None:
    """The visible prefix of a well-formed key, or None for anything else."""
    match = _PATTERN.fullmatch(key)
    return f"{SCHEME}_{match.group(1)}" if match else None


def matches(key: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored_hash)


# What follows a visible prefix: a key's secret, whole or mistyped, up to a path's or a
# query's separator.
_SECRET_PART = re.compile(r"(qk_[a-z2-7]{10})_[^\s/?#&=\"']+")


def redact(text: str) -> str:
    """The text with any key's secret part hidden (its visible prefix kept), for logs and
    error messages: someone who pastes a whole key where a prefix goes must not find it there."""
    return _SECRET_PART.sub(r"\1_***", text)
