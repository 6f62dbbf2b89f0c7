"""What `POST /projects/{project}/ask` takes and returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from quarry.errors import BudgetOverLimit
from quarry.search.models import Filters, Mode
from quarry.validation import Body


class AskBudget(Body):
    """Lowers the configured budget for one request (unset: the configured value). Raising a
    limit above its configured value is refused (422 ``budget_over_limit``)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt limit must not pass unnoticed

    total: int | None = Field(
        default=None,
        ge=256,
        description="tokens of the model's context the call may use (QUARRY_ANSWER_BUDGET)",
    )
    answer_reserve: int | None = Field(
        default=None,
        ge=16,
        description="tokens kept for the answer, also its max_tokens (QUARRY_ANSWER_RESERVE)",
    )
    evidence_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="of the budget less the answer's reserve, the most evidence may take; it "
        "never takes more than the question, instructions and history leave "
        "(QUARRY_ANSWER_EVIDENCE_SHARE)",
    )
    history: int | None = Field(
        default=None,
        ge=0,
        description="conversations: tokens for earlier turns and their summary, taken before "
        "the evidence (QUARRY_ANSWER_HISTORY_BUDGET; older turns are summarised)",
    )


@dataclass(frozen=True)
class BudgetLimits:
    """The configured budget: each request's default and ceiling."""

    total: int = 2048
    answer_reserve: int = 384
    evidence_share: float = 0.75
    history: int = 512

    def resolve(self, asked: AskBudget) -> BudgetLimits:
        values = {}
        for name in ("total", "answer_reserve", "evidence_share", "history"):
            limit = getattr(self, name)
            value = getattr(asked, name)
            if value is not None and value > limit:
                raise BudgetOverLimit(
                    f"budget.{name} may lower the configured {limit}, not raise it",
                    field=f"budget.{name}",
                )
            values[name] = limit if value is None else value
        resolved = BudgetLimits(**values)
        if resolved.answer_reserve >= resolved.total:
            raise BudgetOverLimit(
                f"budget.answer_reserve ({resolved.answer_reserve}) must be below budget.total "
                f"({resolved.total})",
                field="budget.answer_reserve",
            )
        return resolved


class AnswerOptions(Body):
    """How an answer searches, and its budget: shared by ask and conversation messages."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Mode.hybrid
    k: int = Field(default=20, ge=1, le=100, description="hits the context builder reads")
    filters: Filters | None = None
    budget: AskBudget = Field(default_factory=AskBudget)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# What a user asks: one to 4,000 characters, not all of them blank.
UserText = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_not_blank)]


class AskRequest(AnswerOptions):
    question: UserText


class Placed(BaseModel):
    """Where a passage the model read comes from."""

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


class Citation(Placed):
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


class Source(Placed):
    """A passage the model reads, sent as a `result` event before the answer."""

    text: str


class MessageRequest(AnswerOptions):
    content: UserText = Field(description="the user's message")
    stream: bool = Field(
        default=False,
        description="answer as server-sent events (also when the request accepts "
        "text/event-stream)",
    )

    def ask(self) -> AskRequest:
        options = {name: getattr(self, name) for name in AnswerOptions.model_fields}
        return AskRequest(question=self.content, **options)


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
    next_before_id: uuid.UUID | None = Field(
        description="pass as `before_id` with `before`: conversations updated at the same "
        "instant are then neither skipped nor repeated"
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
