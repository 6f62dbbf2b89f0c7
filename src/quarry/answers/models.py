"""What `POST /projects/{project}/ask` takes and returns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quarry.search.models import Filters, Mode
from quarry.validation import Body

DEFAULT_TOTAL = 2048
DEFAULT_ANSWER_RESERVE = 384
DEFAULT_EVIDENCE_SHARE = 0.75
DEFAULT_HISTORY = 512


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
    history: int = Field(
        default=DEFAULT_HISTORY,
        ge=0,
        le=DEFAULT_HISTORY,
        description="conversations: tokens for earlier turns and their summary, taken before "
        "the evidence (older turns that do not fit are summarised in the background)",
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
    kind: Literal["passage", "summary"] = Field(
        default="passage",
        description="summary: the document's summary stood in for its chunks (no chunk ids, "
        "offsets 0)",
    )
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


class Timings(BaseModel):
    search_ms: float = Field(description="search and the context builder")
    first_token_ms: float | None = Field(description="from the request to the first delta")
    total_ms: float


class Source(BaseModel):
    """A passage the model reads, sent as a `result` event before the answer."""

    number: int
    kind: Literal["passage", "summary"] = "passage"
    chunk_ids: list[int]
    document_id: uuid.UUID
    document_title: str
    page: int | None
    char_start: int
    char_end: int
    text: str


class MessageRequest(Body):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=4000, description="the user's message")
    stream: bool = Field(
        default=False,
        description="answer as server-sent events (also when the request accepts "
        "text/event-stream)",
    )
    mode: Mode = Mode.hybrid
    k: int = Field(default=20, ge=1, le=100, description="hits the context builder reads")
    filters: Filters | None = None
    budget: AskBudget = Field(default_factory=AskBudget)

    def ask(self) -> AskRequest:
        return AskRequest(
            question=self.content,
            mode=self.mode,
            k=self.k,
            filters=self.filters,
            budget=self.budget,
        )


class MessageOut(BaseModel):
    id: int
    seq: int
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "partial", "failed"] = Field(
        description="partial: the client left or the model broke off after sending text "
        "(content is what was sent); failed: no answer (error says why)"
    )
    citations: list[Citation]
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    tokens: int = Field(description="the content's own tokens, as history counts them")
    latency_ms: float | None
    ttft_ms: float | None
    error: dict[str, Any] | None
    created_at: datetime


class ConversationCreate(Body):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=200, description="default: the first message")


class ConversationOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    summary: str = Field(description="the rolling summary of turns older than the history")
    summarized_through: int = Field(description="messages up to this seq are in the summary")
    message_count: int
    created_at: datetime
    updated_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class ConversationList(BaseModel):
    conversations: list[ConversationOut]
    next_before: datetime | None = Field(
        description="pass as `before` for the next page; null on the last"
    )


class HistorySummary(BaseModel):
    turns: int = Field(description="earlier messages in the prompt")
    tokens: int = Field(description="their tokens, with the summary's")
    budget_tokens: int
    summarized: bool = Field(description="whether the rolling summary was in the prompt")
    left_out: int = Field(description="turns neither in the prompt nor yet in the summary")


class TurnResult(BaseModel):
    """A conversation's answer, as JSON (the `complete` event carries the same)."""

    answered: bool
    answer: str
    citations: list[Citation]
    unknown_citations: list[int]
    usage: AnswerUsage | None
    context: ContextSummary
    history: HistorySummary
    timings: Timings
    user_message: MessageOut
    message: MessageOut
