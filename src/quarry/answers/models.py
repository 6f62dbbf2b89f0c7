"""What `POST /projects/{project}/ask` takes and returns."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from quarry.search.models import Filters, Mode
from quarry.validation import Body

DEFAULT_TOTAL = 2048
DEFAULT_ANSWER_RESERVE = 384
DEFAULT_EVIDENCE_SHARE = 0.75


class AskBudget(Body):
    model_config = ConfigDict(extra="forbid")  # a misspelt limit must not pass unnoticed

    total: int = Field(
        default=DEFAULT_TOTAL,
        ge=256,
        le=DEFAULT_TOTAL,
        description="tokens of the model's context the call may use (at most the default)",
    )
    answer_reserve: int = Field(
        default=DEFAULT_ANSWER_RESERVE,
        ge=16,
        le=DEFAULT_ANSWER_RESERVE,
        description="tokens kept for the answer, also its max_tokens",
    )
    evidence_share: float = Field(
        default=DEFAULT_EVIDENCE_SHARE,
        gt=0,
        le=DEFAULT_EVIDENCE_SHARE,
        description="of the rest, the share for evidence (the rest: instructions, question)",
    )


class AskRequest(Body):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    mode: Mode = Mode.hybrid
    k: int = Field(default=20, ge=1, le=100, description="hits the context builder reads")
    filters: Filters | None = None
    budget: AskBudget = Field(default_factory=AskBudget)


class Citation(BaseModel):
    number: int
    chunk_ids: list[int]
    document_id: uuid.UUID
    document_title: str
    page: int | None
    char_start: int
    char_end: int
    quote: str = Field(description="the passage's text, as the model read it")


class AnswerUsage(BaseModel):
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None
    latency_ms: float


class ContextSummary(BaseModel):
    passages: int
    tokens: int
    budget_tokens: int
    dropped: dict[str, int] = Field(description="chunks left out, by reason")


class AskResponse(BaseModel):
    answered: bool = Field(
        description="false when retrieval found nothing relevant: no model was called"
    )
    answer: str
    citations: list[Citation] = Field(description="the passages the answer cites, by [n]")
    unknown_citations: list[int] = Field(
        description="[n] the model wrote that matched no passage; removed from the answer"
    )
    usage: AnswerUsage | None
    context: ContextSummary
