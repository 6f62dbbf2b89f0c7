"""Documents and chunks as the API and CLI show them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    pending = "pending"
    indexing = "indexing"
    complete = "complete"
    failed = "failed"


class Document(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    project_id: uuid.UUID
    external_id: str = Field(description="what makes two submissions the same document")
    source_kind: str
    source: str
    title: str
    format: str
    content_hash: str
    size_bytes: int
    version: int
    status: Status
    error: str | None = None
    error_code: str | None = None
    attempts: int
    metadata: dict[str, Any]
    tags: list[str]
    chunk_count: int
    text_length: int | None = None
    summary: str | None = Field(
        default=None, description="a rolling summary, when document summaries are on"
    )
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None = None


Outcome = Literal["created", "updated", "metadata_updated", "unchanged"]


class Submission(BaseModel):
    document: Document
    outcome: Outcome = Field(
        description="created; updated (a new version: new content or format, or a new title, "
        "queued for indexing); metadata_updated (the same content, with new metadata, tags or "
        "source name, changed in place: no new version, the index stands); or unchanged"
    )


class Rejection(BaseModel):
    name: str = Field(description="the file name, path or URL that was refused")
    code: str
    detail: str


class ChunkView(BaseModel):
    id: int
    chunk_index: int
    text: str
    context: str = Field(
        description="the document title this chunk was embedded and analysed with, when the"
        " chunk does not begin with it (empty otherwise)"
    )
    char_start: int
    char_end: int
    page: int | None
    token_count: int = Field(description="tokens the model reads: context and text")
    content_hash: str
    term_count: int
    embedding_models: list[str]


class ProjectCounts(BaseModel):
    document_count: int
    chunk_count: int
    documents_by_status: dict[str, int]
