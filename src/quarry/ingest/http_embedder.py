"""An embedder for any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI).

Batches texts, keeps a bounded number of calls in flight, and retries 429, 5xx, timeouts and
dropped connections with exponential backoff and full jitter, honouring ``Retry-After``.
Other 4xx answers (bad key, input too long) are permanent and not retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
import structlog
from tokenizers import Tokenizer

from quarry.errors import QuarryError, TransientError
from quarry.ingest.embedders import Vector, Vectors, normalize
from quarry.retry import backoff_seconds, retry_after_seconds

log = structlog.get_logger(__name__)
RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class EmbeddingRejected(QuarryError):
    """The embedding server refused the request for a reason retrying will not change."""

    code = "embedding_rejected"
    status = 502
    title = "Embedding server refused the request"


@dataclass(frozen=True)
class _Attempt:
    vectors: Vectors | None = None
    reason: str = ""
    wait: float = 0.0


class OpenAICompatibleEmbedder:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        max_tokens: int,
        tokenizer: Tokenizer | None,
        api_key: str | None = None,
        batch_size: int = 32,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.model_id = model
        self.dimensions = 0  # learnt from the first answer
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self._model = model
        self._limit = asyncio.Semaphore(concurrency)
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not security
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, max(self.dimensions, 1)), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        parts = await asyncio.gather(*(self._embed_batch(list(batch)) for batch in batches))
        return np.concatenate(parts)

    async def embed_query(self, query: str) -> Vector:
        vector: Vector = (await self.embed([query]))[0]
        return vector

    async def _embed_batch(self, texts: list[str]) -> Vectors:
        async with self._limit:
            deadline = time.monotonic() + self.timeout * (self.max_retries + 1)
            for attempt in range(self.max_retries + 1):
                outcome = await self._try(texts, attempt)
                if outcome.vectors is not None:
                    return outcome.vectors
                if attempt == self.max_retries or time.monotonic() + outcome.wait > deadline:
                    raise TransientError(
                        f"embedding failed after {attempt + 1} tries: {outcome.reason}"
                    )
                log.warning(
                    "embedding retry",
                    attempt=attempt + 1,
                    wait_s=round(outcome.wait, 2),
                    reason=outcome.reason,
                )
                await asyncio.sleep(outcome.wait)
        raise AssertionError("unreachable")

    async def _try(self, texts: list[str], attempt: int) -> _Attempt:
        """One call: the vectors, or why it failed and how long to wait before the next."""
        backoff = backoff_seconds(attempt, self.backoff_base, self.backoff_cap, self._rng)
        try:
            response = await self._client.post(
                "embeddings", json={"model": self._model, "input": texts}
            )
        except httpx.TimeoutException:
            return _Attempt(reason="timed out", wait=backoff)
        except httpx.TransportError as exc:
            return _Attempt(reason=f"connection failed: {exc!r}", wait=backoff)
        if response.status_code == 200:
            return self._parse(response, len(texts), backoff)
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            return _Attempt(reason=reason, wait=backoff if retry_after is None else retry_after)
        raise EmbeddingRejected(f"the embedding server refused the request: {reason}")

    def _parse(self, response: httpx.Response, expected: int, backoff: float) -> _Attempt:
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = normalize([item["embedding"] for item in items])
        except (ValueError, KeyError, TypeError) as exc:
            return _Attempt(reason=f"malformed response: {exc!r}", wait=backoff)
        if len(vectors) != expected or vectors.ndim != 2:
            return _Attempt(
                reason=f"asked for {expected} embeddings, got {len(vectors)}", wait=backoff
            )
        if not np.isfinite(vectors).all():  # JSON's NaN parses; pgvector would refuse it
            return _Attempt(reason="malformed response: a NaN or infinite value", wait=backoff)
        self.dimensions = int(vectors.shape[1])
        return _Attempt(vectors=vectors)

    async def aclose(self) -> None:
        await self._client.aclose()
