"""The rerank stage: a second opinion on the fused candidates, from a model that reads the
query and each passage together.

Off by default: no cross-encoder ships in a wheel. ``QUARRY_RERANKER_MODEL`` names a local
directory (or an id already in the local Hugging Face cache; nothing is downloaded).
``QUARRY_RERANKER=llm`` grades passages with whatever model serves the gateway's ``rerank`` role
instead (``LLMReranker``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

import structlog

from quarry.errors import QuarryError

if TYPE_CHECKING:
    from quarry.gateway.gateway import Gateway

log = structlog.get_logger(__name__)


class Reranker(Protocol):
    name: str

    async def score(
        self, query: str, passages: Sequence[str], *, project_id: UUID | None = None
    ) -> list[float]:
        """One relevance score per passage, higher is better. ``project_id`` is for the
        accounting of rerankers that call models."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder, run in a thread so the event loop stays free."""

    def __init__(self, model: str | Path, *, batch_size: int = 32, max_length: int = 512) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers
        from sentence_transformers import CrossEncoder

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        self.name = str(model)
        self.batch_size = batch_size
        self._model = CrossEncoder(
            str(model), device="cpu", max_length=max_length, local_files_only=True
        )
        self._lock = threading.Lock()  # one forward pass at a time; torch uses every core

    async def score(
        self, query: str, passages: Sequence[str], *, project_id: UUID | None = None
    ) -> list[float]:
        if not passages:
            return []
        return await asyncio.to_thread(self._score, query, list(passages))

    def _score(self, query: str, passages: list[str]) -> list[float]:
        with self._lock:
            scores = self._model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return [float(s) for s in scores]


GRADE_SCHEMA = {
    "type": "object",
    "properties": {"relevance": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["relevance"],
    "additionalProperties": False,
}
GRADE_INSTRUCTIONS = (
    "You judge search results. Rate how relevant the passage is to the query, from 0 "
    "(unrelated) to 10 (answers it directly). Reply with JSON only."
)
UNGRADED = -1.0


class LLMReranker:
    """Pointwise grades from a generative model, through the gateway's ``rerank`` role.

    Each passage is shown to the model with the query and graded 0 to 10 as schema-checked
    JSON, a few passages at a time. Grades are coarse: equal grades keep the fused order (the
    search service breaks ties by fused rank). A passage the model could not grade (its chain
    failed, or its output was invalid twice) scores -1, below every graded one; if none could
    be graded, the fused order stands.
    """

    def __init__(
        self,
        gateway: Gateway,
        role: str = "rerank",
        *,
        concurrency: int = 4,
        max_passage_chars: int = 2000,
    ) -> None:
        self.gateway = gateway
        self.role = role
        self.name = f"llm:{role}"
        self.concurrency = concurrency
        self.max_passage_chars = max_passage_chars

    async def score(
        self, query: str, passages: Sequence[str], *, project_id: UUID | None = None
    ) -> list[float]:
        limit = asyncio.Semaphore(self.concurrency)

        async def grade(passage: str) -> float:
            async with limit:
                return await self._grade(query, passage, project_id)

        return list(await asyncio.gather(*(grade(p) for p in passages)))

    async def _grade(self, query: str, passage: str, project_id: UUID | None) -> float:
        messages = [
            {"role": "system", "content": GRADE_INSTRUCTIONS},
            {
                "role": "user",
                "content": f"Query: {query}\n\nPassage: {passage[: self.max_passage_chars]}",
            },
        ]
        try:
            done = await self.gateway.generate_json(
                self.role,
                messages,
                GRADE_SCHEMA,
                schema_name="grade",
                project_id=project_id,
                max_tokens=16,
                temperature=0,
            )
        except QuarryError as exc:
            log.warning("passage not graded", reranker=self.name, code=exc.code, error=exc.detail)
            return UNGRADED
        return float(done.value["relevance"])


def load_reranker(model: str) -> CrossEncoderReranker:
    """The configured cross-encoder, or a start-up error that says what is wrong."""
    from quarry.db.database import StartupError

    try:
        return CrossEncoderReranker(model)
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"cannot load the reranker QUARRY_RERANKER_MODEL={model}: {exc}\n"
            "  It must be a local sentence-transformers cross-encoder directory (or an id in "
            "the local Hugging Face cache); quarry never downloads models."
        ) from exc
