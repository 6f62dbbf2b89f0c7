"""Ask: search, build the context under the budget, answer with the generation role, and
check every citation.

The model sees numbered passages and is told to cite them as [n]. Every [n] in its answer must
name a passage that was in the context: others are removed from the text and reported. When
retrieval finds nothing relevant (no hit matches a query term and none is semantically close),
quarry says so without calling a model.

The budget is hard, counted with the answering model's tokenizer: the prompt (instructions,
history, evidence and question) plus the answer's reserve never exceed ``budget.total``. The
question and instructions are paid first; a conversation's history takes at most half of what
they leave (and at most ``budget.history``); the evidence gets the rest, capped by its share.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from quarry.answers.citations import clean_citations
from quarry.answers.context import Budget, Context, ContextBuilder, Passage
from quarry.answers.history import History, StoredTurn, select_history
from quarry.answers.models import (
    AnswerUsage,
    AskRequest,
    AskResponse,
    BudgetLimits,
    Citation,
    ContextSummary,
    HistorySummary,
    Source,
)
from quarry.db.database import Database
from quarry.errors import BudgetTooSmall, QuestionOverBudget
from quarry.gateway.gateway import Gateway
from quarry.gateway.types import StreamEnd, Usage
from quarry.ingest.embedders import Vectors
from quarry.search.models import Hit, SearchRequest, SearchResponse
from quarry.search.service import Search

ROLE = "generation"
MIN_SIMILARITY = 0.35  # a hit found only by the vector side must be at least this close
MAX_QUERY_CHARS = 4000  # what a search query may hold
MIN_EVIDENCE = 48  # tokens: a question that leaves less than this for evidence is refused
SLACK = 8  # tokens kept back for where the rendered sources meet the question's text
NOTHING_FOUND = "I found nothing in this project's documents that answers the question."
INSTRUCTIONS = (
    "Answer the question using only the numbered sources. Cite the sources you use as [n] "
    "right after the statement they support. If the sources do not answer the question, say "
    "so. Be concise."
)


def relevant(hits: list[Hit]) -> bool:
    return any("bm25" in h.ranks or h.scores.get("vector", 0.0) >= MIN_SIMILARITY for h in hits)


@dataclass(frozen=True)
class Earlier:
    """A conversation's past as stored: its rolling summary and the turns after it."""

    summary: str
    summarized_through: int
    newest_first: Sequence[StoredTurn]


@dataclass(frozen=True)
class Prepared:
    """Everything before the model call: what a streamed answer sends first."""

    question: str
    context: Context
    messages: list[dict[str, str]]
    relevant: bool
    history: History | None
    model: str  # the generation role's first model: whose tokenizer counted the budget
    started: float  # time.monotonic() when the request began
    search_ms: float

    def sources(self) -> list[Source]:
        return [Source(text=p.text, **_placed(p)) for p in self.context.passages]

    def cite(self, text: str) -> tuple[str, list[Citation], list[int]]:
        """The answer with unknown [n] removed, its citations, and the unknown numbers."""
        passages = self.context.by_number()
        answer, cited, unknown = clean_citations(text, set(passages))
        return answer, [citation(passages[n]) for n in cited], unknown

    def context_summary(self) -> ContextSummary:
        context = self.context
        return ContextSummary(
            passages=len(context.passages),
            tokens=context.tokens,
            budget_tokens=context.budget.evidence_tokens,
            dropped=dict(Counter(d.reason for d in context.dropped)),
        )

    def history_summary(self) -> HistorySummary:
        h = self.history
        if h is None:
            return HistorySummary(turns=0, tokens=0, budget_tokens=0, summarized=False, left_out=0)
        return HistorySummary(
            turns=len(h.turns),
            tokens=h.tokens,
            budget_tokens=h.budget,
            summarized=h.summarized,
            left_out=h.left_out,
        )


def citation(passage: Passage) -> Citation:
    return Citation(quote=passage.text, **_placed(passage))


def _placed(passage: Passage) -> dict[str, Any]:
    """Where a passage comes from: what a source event and a citation both say of it."""
    return {
        "number": passage.number,
        "kind": "summary" if passage.summary else "passage",
        "chunk_ids": passage.chunk_ids,
        "document_id": passage.document_id,
        "document_title": passage.title,
        "page": passage.page,
        "char_start": passage.char_start,
        "char_end": passage.char_end,
    }


def answer_usage(usage: Usage) -> AnswerUsage:
    return AnswerUsage(
        model=usage.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost=usage.cost,
        latency_ms=usage.latency_ms,
    )


def _messages(question: str, sources: str, history: History | None) -> list[dict[str, str]]:
    system = INSTRUCTIONS
    if history is not None and history.summary:
        system += f"\n\nSummary of the conversation so far: {history.summary}"
    turns = [t.as_dict() for t in history.turns] if history is not None else []
    user = f"Sources:\n\n{sources}\n\nQuestion: {question}"
    return [
        {"role": "system", "content": system},
        *_alternating([*turns, {"role": "user", "content": user}]),
    ]


def _alternating(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """User and assistant turns in strict alternation, beginning with the user's, as many chat
    templates require: a leading answer is dropped, and turns of one role in a row (a failed
    answer left out, a client's history) are joined."""
    while turns and turns[0]["role"] != "user":
        turns = turns[1:]
    joined: list[dict[str, str]] = []
    for turn in turns:
        if joined and joined[-1]["role"] == turn["role"]:
            joined[-1] = {
                "role": turn["role"],
                "content": f"{joined[-1]['content']}\n\n{turn['content']}",
            }
        else:
            joined.append(turn)
    return joined


class Answers:
    def __init__(
        self,
        db: Database,
        search: Search,
        gateway: Gateway,
        limits: BudgetLimits | None = None,
        *,
        duplicate_threshold: float = 0.95,
        max_per_document: int = 2,
        passage_tokens: int | None = None,
    ) -> None:
        self.db = db
        self.search = search
        self.gateway = gateway
        self.limits = limits or BudgetLimits()
        self.duplicate_threshold = duplicate_threshold
        self.max_per_document = max_per_document
        self.passage_tokens = passage_tokens

    @property
    def model(self) -> str:
        return self.gateway.chain(ROLE)[0].name

    def count_tokens(self, text: str) -> int:
        return self.gateway.count_tokens(self.model, text)

    async def ready(self) -> None:
        """The answering model loaded, so that counting in its tokens does not load it."""
        await self.gateway.ready(self.model)

    async def prepare(
        self, project_id: uuid.UUID, request: AskRequest, earlier: Earlier | None = None
    ) -> Prepared:
        """Check the question fits, pick the history, search, and build the context."""
        started = time.monotonic()
        await self.ready()
        model = self.model
        spec = self.limits.resolve(request.budget)
        fixed = self.gateway.count_tokens(model, _messages(request.question, "", None))
        room = spec.total - spec.answer_reserve - fixed
        if room < MIN_EVIDENCE:
            raise QuestionOverBudget(
                f"the question and instructions take {fixed} tokens of {model}; with "
                f"{spec.answer_reserve} kept for the answer that leaves {room} of the budget's "
                f"{spec.total} for evidence, and at least {MIN_EVIDENCE} are needed",
                question_tokens=fixed,
            )
        history = None
        if earlier is not None:
            history_budget = min(spec.history, room // 2)
            history = select_history(
                earlier.summary, earlier.newest_first, history_budget, self.count_tokens
            )
            if history.left_out_through and history_budget < self.limits.history:
                # This request had less room (a lowered budget, a long question): what it left
                # out is not folded into the summary for good, only what the configured
                # budget cannot keep, so the next request still reads those turns in full.
                standing = select_history(
                    earlier.summary, earlier.newest_first, self.limits.history, self.count_tokens
                )
                history = replace(history, fold_through=standing.left_out_through)
            room -= history.tokens
        found = await self._search(project_id, request, request.question)
        if not relevant(found.hits) and history is not None:
            # A follow-up ("and the other one?") finds nothing on its own: read it together
            # with the user's previous turn.
            previous = next((t.content for t in reversed(history.turns) if t.role == "user"), "")
            room_for_previous = MAX_QUERY_CHARS - len(request.question) - 1
            if previous and room_for_previous > 0:
                query = f"{previous[-room_for_previous:]} {request.question}"
                found = await self._search(project_id, request, query)
        hits = found.hits
        budget = Budget(
            total=spec.total,
            answer_reserve=spec.answer_reserve,
            evidence_share=spec.evidence_share,
            evidence_limit=room - SLACK,
        )
        if not relevant(hits):
            return Prepared(
                request.question,
                Context([], [], budget, 0),
                [],
                False,
                history,
                model,
                started,
                _ms(started),
            )
        builder = ContextBuilder(
            self.count_tokens,
            duplicate_threshold=self.duplicate_threshold,
            max_per_document=self.max_per_document,
            passage_tokens=self.passage_tokens,
        )
        vectors = await self._vectors(project_id, hits)
        summaries = await self._summaries(project_id, hits)
        # The terms as highlights mark them: a passage is cut by matching words of its stored
        # text, which keeps the spelling the analyzer made one (haemoglobin, hemoglobin).
        terms = found.search_metadata.highlight_terms
        prompt_limit = spec.total - spec.answer_reserve
        while True:
            context = builder.build(hits, budget, vectors, summaries, terms)
            if not context.passages:
                raise BudgetTooSmall(
                    f"relevant passages were found but none fits the {budget.evidence_tokens} "
                    f"tokens left for evidence; raise budget.total or lower "
                    f"budget.answer_reserve",
                    evidence_tokens=budget.evidence_tokens,
                )
            messages = _messages(request.question, context.render(), history)
            # The parts were counted one by one; the whole prompt, as the model's chat
            # template lays it out, is what must fit. When it does not, the evidence gives way.
            over = self.gateway.count_tokens(model, messages) - prompt_limit
            if over <= 0:
                break
            budget = replace(budget, evidence_limit=budget.evidence_tokens - over - SLACK)
        return Prepared(
            request.question, context, messages, True, history, model, started, _ms(started)
        )

    async def ask(
        self, project_id: uuid.UUID, user_id: uuid.UUID | None, request: AskRequest
    ) -> AskResponse:
        prepared = await self.prepare(project_id, request)
        if not prepared.relevant:
            return AskResponse(
                answered=False,
                answer=NOTHING_FOUND,
                citations=[],
                unknown_citations=[],
                usage=None,
                context=prepared.context_summary(),
            )
        done = await self.gateway.generate(
            ROLE,
            prepared.messages,
            project_id=project_id,
            user_id=user_id,
            max_tokens=prepared.context.budget.answer_reserve,
            token_budget=prepared.context.budget.total,  # for a fallback model too
            temperature=0,
        )
        answer, citations, unknown = prepared.cite(done.text)
        return AskResponse(
            answered=True,
            answer=answer,
            citations=citations,
            unknown_citations=unknown,
            usage=answer_usage(done.usage),
            context=prepared.context_summary(),
        )

    def stream(
        self,
        prepared: Prepared,
        project_id: uuid.UUID,
        user_id: uuid.UUID | None,
        request_id: str | None = None,
    ) -> AsyncIterator[str | StreamEnd]:
        """The gateway's stream of the answer: deltas, then one StreamEnd."""
        return self.gateway.stream(
            ROLE,
            prepared.messages,
            project_id=project_id,
            user_id=user_id,
            request_id=request_id,
            max_tokens=prepared.context.budget.answer_reserve,
            token_budget=prepared.context.budget.total,  # for a fallback model too
            temperature=0,
        )

    async def _search(
        self, project_id: uuid.UUID, request: AskRequest, query: str
    ) -> SearchResponse:
        return await self.search.search(
            project_id,
            SearchRequest(query=query, mode=request.mode, k=request.k, filters=request.filters),
        )

    async def _summaries(self, project_id: uuid.UUID, hits: list[Hit]) -> dict[uuid.UUID, str]:
        rows = await self.db.fetch_all(
            "documents.summaries",
            project_id=project_id,
            document_ids=list({h.document_id for h in hits}),
        )
        return {row["id"]: row["summary"] for row in rows}

    async def _vectors(self, project_id: uuid.UUID, hits: list[Hit]) -> dict[int, Vectors]:
        embedder = self.search.embedder
        if embedder is None or not hits:
            return {}
        rows = await self.db.fetch_all(
            "search.chunk_vectors",
            project_id=project_id,
            model=embedder.model_id,
            chunk_ids=[h.chunk_id for h in hits],
        )
        return {row["chunk_id"]: row["embedding"].to_numpy() for row in rows}


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 2)
