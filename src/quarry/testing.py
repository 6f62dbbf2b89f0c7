"""Real implementations of quarry's seams for tests of other parts (shipped, not patched in).

``HashEmbedder`` makes deterministic vectors from text with no model; ``CountingEmbedder``
wraps any embedder and records what it was asked to embed; ``FlakyEmbedder`` fails a given
number of calls first, as a rate-limited provider would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from quarry.errors import TransientError
from quarry.ingest.embedders import Embedder, Vectors, normalize


@dataclass
class HashEmbedder:
    """Each word of a text votes for a few dimensions; texts sharing words are close."""

    model_id: str = "test/hash-embedder"
    dimensions: int = 64
    max_tokens: int = 128
    tokenizer: None = None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                vectors[row, digest[0] % self.dimensions] += 1.0
                vectors[row, digest[1] % self.dimensions] += 0.5
            vectors[row, 0] += 1e-3  # never the zero vector
        return normalize(vectors)

    async def aclose(self) -> None:
        return None


@dataclass
class _Delegating:
    """Presents ``inner``'s model (id, dimensions, limit, tokenizer) as its own."""

    inner: Embedder

    def __post_init__(self) -> None:
        self.model_id = self.inner.model_id
        self.dimensions = self.inner.dimensions
        self.max_tokens = self.inner.max_tokens
        self.tokenizer = self.inner.tokenizer

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class CountingEmbedder(_Delegating):
    """Delegates to ``inner`` and keeps every text it was asked to embed, in order."""

    texts: list[str] = field(default_factory=list)
    calls: int = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed(texts)


@dataclass
class FlakyEmbedder(_Delegating):
    """Raises TransientError for the first ``failures`` calls, then delegates."""

    failures: int = 0
    calls: int = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError(f"scripted failure {self.calls} of {self.failures}")
        return await self.inner.embed(texts)
