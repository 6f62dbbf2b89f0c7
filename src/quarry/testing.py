"""Real implementations of quarry's seams for tests of other parts (shipped, not patched in).

``HashEmbedder`` makes deterministic vectors from text with no model; ``CountingEmbedder``
wraps any embedder and records what it was asked to embed; ``FlakyEmbedder`` fails a given
number of calls first, as a rate-limited provider would; ``HeldEmbedder`` holds each call
until released, so a test can act while a document is being indexed. ``llama_server`` runs
llama.cpp's OpenAI-compatible server over a GGUF file on a free port (tests and
bench/gateway.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from quarry.errors import TransientError
from quarry.ingest.embedders import Embedder, Vector, Vectors, normalize


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

    async def embed_query(self, query: str) -> Vector:
        vector: Vector = (await self.embed([query]))[0]
        return vector

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

    async def embed_query(self, query: str) -> Vector:
        vector: Vector = (await self.embed([query]))[0]
        return vector


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

    async def embed_query(self, query: str) -> Vector:
        vector: Vector = (await self.embed([query]))[0]
        return vector


@dataclass
class HeldEmbedder(_Delegating):
    """Holds every call until ``release`` is set (``entered`` is set when one arrives); the
    first ``failures`` calls then raise TransientError, the rest delegate."""

    failures: int = 0
    calls: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        call = self.calls
        self.entered.set()
        await self.release.wait()
        if call <= self.failures:
            raise TransientError(f"scripted failure {call} of {self.failures}")
        return await self.inner.embed(texts)

    async def embed_query(self, query: str) -> Vector:
        return await self.inner.embed_query(query)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    model: Path, log_path: Path, *, alias: str = "smollm2", n_ctx: int = 2048, wait: float = 90
) -> Iterator[str]:
    """``python -m llama_cpp.server`` over ``model``; yields its base URL (ending in /v1)."""
    port = free_port()
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--n_ctx", str(n_ctx),
                "--model_alias", alias,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + wait
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
