"""Ask: search, build the context under the budget, answer with the generation role, and
check every citation.

The model sees numbered passages and is told to cite them as [n]. Every [n] in its answer must
name a passage that was in the context: others are removed from the text and reported. When
retrieval finds nothing relevant (no hit matches a query term and none is semantically close),
quarry says so without calling a model.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass

from quarry.answers.context import Budget, Context, ContextBuilder
from quarry.answers.models import (
    AnswerUsage,
    AskRequest,
    AskResponse,
    Citation,
    ContextSummary,
)
from quarry.db.database import Database
from quarry.gateway.gateway import Gateway
from quarry.ingest.embedders import Vectors
from quarry.search.models import Hit, SearchRequest
from quarry.search.service import Search

ROLE = "generation"
MIN_SIMILARITY = 0.35  # a hit found only by the vector side must be at least this close
NOTHING_FOUND = "I found nothing in this project's documents that answers the question."
INSTRUCTIONS = (
    "Answer the question using only the numbered sources. Cite the sources you use as [n] "
    "right after the statement they support. If the sources do not answer the question, say "
    "so. Be concise."
)
_CITATION = re.compile(r"\[(\d{1,4})\]")


def clean_citations(answer: str, numbers: set[int]) -> tuple[str, list[int], list[int]]:
    """The answer without [n] that name no passage; the numbers cited; the unknown ones."""
    cited: list[int] = []
    unknown: list[int] = []

    def check(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if n in numbers:
            if n not in cited:
                cited.append(n)
            return match.group(0)
        if n not in unknown:
            unknown.append(n)
        return ""

    text = _CITATION.sub(check, answer)
    text = re.sub(r"[ \t]+([.,;:])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip(), cited, unknown


def relevant(hits: list[Hit]) -> bool:
    return any("bm25" in h.ranks or h.scores.get("vector", 0.0) >= MIN_SIMILARITY for h in hits)


@dataclass(frozen=True)
class Prepared:
    context: Context
    messages: list[dict[str, str]]
    relevant: bool


class Answers:
    def __init__(self, db: Database, search: Search, gateway: Gateway) -> None:
        self.db = db
        self.search = search
        self.gateway = gateway

    async def prepare(self, project_id: uuid.UUID, request: AskRequest) -> Prepared:
        """Search and the context: everything before the model call (also what a streamed
        answer will send first)."""
        found = await self.search.search(
            project_id,
            SearchRequest(
                query=request.question, mode=request.mode, k=request.k, filters=request.filters
            ),
        )
        budget = Budget(
            total=request.budget.total,
            answer_reserve=request.budget.answer_reserve,
            evidence_share=request.budget.evidence_share,
        )
        hits = found.hits
        if not relevant(hits):
            return Prepared(Context([], [], budget, 0), [], relevant=False)
        model = self.gateway.chain(ROLE)[0].name
        builder = ContextBuilder(lambda text: self.gateway.count_tokens(model, text))
        context = builder.build(hits, budget, await self._vectors(project_id, hits))
        messages = [
            {"role": "system", "content": INSTRUCTIONS},
            {
                "role": "user",
                "content": f"Sources:\n\n{context.render()}\n\nQuestion: {request.question}",
            },
        ]
        return Prepared(context, messages, relevant=True)

    async def ask(
        self, project_id: uuid.UUID, user_id: uuid.UUID | None, request: AskRequest
    ) -> AskResponse:
        prepared = await self.prepare(project_id, request)
        context = prepared.context
        if not prepared.relevant:
            return AskResponse(
                answered=False,
                answer=NOTHING_FOUND,
                citations=[],
                unknown_citations=[],
                usage=None,
                context=_summary(context),
            )
        done = await self.gateway.generate(
            ROLE,
            prepared.messages,
            project_id=project_id,
            user_id=user_id,
            max_tokens=context.budget.answer_reserve,
            temperature=0,
        )
        passages = context.by_number()
        answer, cited, unknown = clean_citations(done.text, set(passages))
        citations = [
            Citation(
                number=n,
                chunk_ids=passages[n].chunk_ids,
                document_id=passages[n].document_id,
                document_title=passages[n].title,
                page=passages[n].page,
                char_start=passages[n].char_start,
                char_end=passages[n].char_end,
                quote=passages[n].text,
            )
            for n in cited
        ]
        usage = done.usage
        return AskResponse(
            answered=True,
            answer=answer,
            citations=citations,
            unknown_citations=unknown,
            usage=AnswerUsage(
                model=usage.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=usage.cost,
                latency_ms=usage.latency_ms,
            ),
            context=_summary(context),
        )

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


def _summary(context: Context) -> ContextSummary:
    return ContextSummary(
        passages=len(context.passages),
        tokens=context.tokens,
        budget_tokens=context.budget.evidence_tokens,
        dropped=dict(Counter(d.reason for d in context.dropped)),
    )
