"""What a submission carries before it becomes a document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    data: bytes
    name: str  # a file name, path or URL, shown to people and used to detect the format
    external_id: str
    kind: str  # upload, path, text or url
    media_type: str | None = None
    format: str | None = None  # overrides detection
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
