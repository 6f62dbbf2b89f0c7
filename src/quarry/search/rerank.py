"""The rerank stage: a second opinion on the fused candidates, from a model that reads the
query and each passage together.

Off by default: no cross-encoder ships in a wheel. ``QUARRY_RERANKER_MODEL`` names a local
directory (or an id already in the local Hugging Face cache; nothing is downloaded).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class Reranker(Protocol):
    name: str

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, higher is better."""
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

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
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
