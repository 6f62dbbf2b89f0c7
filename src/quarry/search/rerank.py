"""The rerank stage: a second opinion on the fused candidates, from a model that reads the
query and each passage more closely than the retrievers did.

Hybrid searches run it by default (``Search.reranks``); bm25 and vector searches on request.
Three kinds (``QUARRY_RERANKER``; ``none`` turns the stage off):

- ``late_interaction``, the default with the local embedder: the bundled embedding model's
  own token vectors, compared token by token (ColBERT's MaxSim) instead of pooled into one
  vector each. Needs no other model, so it works offline out of the box. Indexing keeps every
  chunk's token vectors in a compact form, and the query's come from the pass that embeds it,
  so a rerank costs milliseconds, not a forward pass per candidate. Its scores are blended
  with the fused ones, as far as the fusion trusts the model for the query: on SciFact it lifts
  hybrid from 0.733 to about 0.744 nDCG@10, while alone it ranks about as well as the fusion
  (bench/README.md).
- ``cross_encoder``: a sentence-transformers cross-encoder; ``QUARRY_RERANKER_MODEL`` names a
  local directory (or an id already in the local Hugging Face cache; nothing is downloaded).
  None ships in a wheel. A forward pass per candidate: hundreds of milliseconds for 50 on
  two cores, where the search without it takes tens.
- ``llm``: whatever model serves the gateway's ``rerank`` role grades each passage
  (``LLMReranker``).

Each reranker says how many fused candidates it reads by default (``depth``) and how much the
fused order still counts beside its scores (``fused_weight``, see ``blend``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeGuard
from uuid import UUID

import numpy as np
import structlog

from quarry.errors import QuarryError
from quarry.search.fusion import Fused, dense_trust, sink_below

if TYPE_CHECKING:
    from quarry.gateway.gateway import Gateway
    from quarry.ingest.embedders import LocalEmbedder, SentenceTransformerModel, Vectors

log = structlog.get_logger(__name__)


class Reranker(Protocol):
    name: str
    depth: int  # fused candidates read unless QUARRY_RERANK_DEPTH says otherwise
    fused_weight: float  # the fused score's share beside the reranker's (``blend``); 0: none
    # How the reranker's own weight in the blend follows the fusion's trust in the dense side
    # for the query (quarry.search.fusion.dense_trust, raised to this power); 0: it does not.
    trust_power: float
    # The embedding model whose stored token vectors the reranker reads beside each passage's
    # text (late interaction); None: text only.
    token_vectors_model: str | None

    async def score(
        self,
        query: str,
        passages: Sequence[str],
        *,
        project_id: UUID | None = None,
        token_vectors: Sequence[bytes | None] | None = None,
        query_token_vectors: bytes | None = None,
    ) -> list[float]:
        """One relevance score per passage, higher is better. ``project_id`` is for the
        accounting of rerankers that call models; ``token_vectors``, each passage's stored
        token vectors (or None) under ``token_vectors_model``, and ``query_token_vectors``,
        the query's in the same form where its embedding pass gave them, for those that read
        them."""
        ...


def blend(
    rerank: Sequence[float],
    fused: Sequence[float],
    fused_weight: float,
    rerank_weight: float = 1.0,
) -> list[float]:
    """The final scores of the reranked candidates.

    With ``fused_weight`` 0 the reranker's scores as they are (a cross-encoder's or an LLM's
    judgement replaces the fused order). Otherwise both sets of scores become z-scores over
    the candidates and add up, the reranker's times ``rerank_weight`` and the fused one times
    ``fused_weight``: a reranker that sees the passages differently from the retrievers, but
    not better, corrects the fused order instead of replacing it. A set with no spread (one
    candidate, equal scores) adds nothing.
    """
    if fused_weight == 0:
        return [float(score) for score in rerank]
    return [
        float(rerank_weight * r + fused_weight * f)
        for r, f in zip(_zscores(rerank), _zscores(fused), strict=True)
    ]


def reranked_order(head: list[Fused], tail: list[Fused]) -> list[Fused]:
    """The reranked candidates (``head``, their scores final, ``ranks["fused"]`` set) by
    score, then the candidates past the rerank depth in their fused order, each given its
    fused rank, and their scores moved as a block below the lowest reranked one: a page longer
    than the rerank depth is in score order throughout. Equal rerank scores (an LLM's coarse
    grades) keep the fused order."""
    ordered = sorted(head, key=lambda f: (-f.score, f.ranks["fused"]))
    for rank, item in enumerate(tail, len(head) + 1):
        item.ranks["fused"] = rank
    if ordered:
        sink_below(ordered[-1].score, tail)  # the tail is in fused order
    return ordered + tail


def rerank_weight(reranker: Reranker, agreement: float | None) -> float:
    """The reranker's weight in ``blend`` for a query whose retrievers agreed so much."""
    if reranker.trust_power == 0:
        return 1.0
    return float(dense_trust(agreement) ** reranker.trust_power)


def _zscores(scores: Sequence[float]) -> list[float]:
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return []
    spread = values.std()
    if spread == 0:
        return [0.0] * values.size
    return [float(z) for z in (values - values.mean()) / spread]


def maxsim(query: Vectors, passage: Vectors) -> float:
    """Late interaction's score: each query token's best cosine among the passage's tokens,
    averaged over the query's tokens (ColBERT's MaxSim, as a mean so that it reads the same
    for queries of any length). Rows are (about) unit vectors; no tokens on either side
    scores 0."""
    if len(query) == 0 or len(passage) == 0:
        return 0.0
    return float((query @ passage.T).max(axis=1).mean())


def maxsims(query: Vectors, passages: Sequence[Vectors | None]) -> list[float]:
    """``maxsim`` of one query against each passage; a passage without token vectors (None)
    scores 0. (Products this small, or one over every candidate at once, stay on the calling
    thread only because quarry holds numpy's BLAS to it: ``runtime.blas_on_calling_thread``.)"""
    return [0.0 if found is None else maxsim(query, found) for found in passages]


class LateInteractionReranker:
    """The local embedding model's token vectors, matched token by token.

    The bundled all-MiniLM-L6-v2 pools every token's vector into one per passage, and the
    vector retriever compares those. Before pooling, its token vectors say which of the
    query's words found a counterpart in the passage and how closely: a finer signal from the
    same model. It ranks no better than the fusion alone, but it errs differently, so the two
    are blended (``fused_weight`` 1, and the MaxSim's weight ``trust_power`` below). On
    SciFact's train queries, over the fused top 20 by each document's best chunk: 0.7307 to
    0.7389 nDCG@10; test 0.7335 to 0.7423 (bench/README.md, with the sweeps over depth and
    weight).

    Token vectors are compared in the compact form they are stored in
    (``quarry.ingest.token_vectors``: 64 dimensions, four bits each), the query's too. Where late
    interaction is on, indexing keeps every chunk's (``LocalEmbedder(keep_token_vectors=True)``)
    and the search's query pass gives the query's, so a rerank reads its candidates' from the
    database and compares: milliseconds (the query is encoded here only where the search did
    not embed it, in bm25 mode). A candidate without them (indexed before, by a worker that
    did not keep them, or in an older form) is encoded again, one forward pass each, as a
    cross-encoder of the same size would: hundreds of milliseconds for 20 on two cores (a
    warning says so once; every worker queues such chunks' documents for a re-embed as it
    starts, ``Runtime.refill_token_vectors``). Encodes run one rerank at
    a time, on a thread of its own whose torch thread count is set when it starts
    (``threads``; default: every core torch would use), whatever the process's other threads
    were left with; a rerank with nothing to encode is scored where it is asked for, without
    waiting for that thread.
    """

    name = "late_interaction"
    depth = 20
    fused_weight = 1.0
    # The same model as the dense retriever: where the fusion trusts that side less for a
    # query (the retrievers disagree), the MaxSim counts less too. With the square root of the
    # fusion's trust, on SciFact's train queries 0.7389 nDCG@10 against 0.7384 ungated and
    # 0.7307 without the stage; on SciFact with every word enciphered (a collection the model
    # cannot read) 0.6566 against 0.6475 ungated and 0.6546 without (bench/README.md).
    trust_power = 0.5
    # One rerank runs on every core, where fewer, larger passes pay (the indexing lanes run
    # one torch thread each and small passes cost them nothing): 20 SciFact candidates took
    # about 370 ms in the lanes' passes (8 texts, cut at 0.9 of the longest), 290 in passes
    # of 32 uncut, 270 in passes of 32 cut at 0.7.
    pass_size = 32
    pass_length_ratio = 0.7

    def __init__(self, model: SentenceTransformerModel, threads: int = 0) -> None:
        import torch

        from quarry.ingest.embedders import torch_thread_pool

        self.model = model
        self.token_vectors_model: str | None = model.model_id
        self.encoded = 0  # candidates encoded because nothing was stored, for tests and logs
        self._thread = torch_thread_pool(1, threads or torch.get_num_threads(), "rerank")

    async def score(
        self,
        query: str,
        passages: Sequence[str],
        *,
        project_id: UUID | None = None,
        token_vectors: Sequence[bytes | None] | None = None,
        query_token_vectors: bytes | None = None,
    ) -> list[float]:
        if not passages:
            return []
        from quarry.ingest.token_vectors import unpack

        query_tokens = unpack(query_token_vectors)
        stored = token_vectors if token_vectors is not None else [None] * len(passages)
        tokens = [unpack(value) for value in stored]
        if query_tokens is not None and all(found is not None for found in tokens):
            # Everything stored: under a millisecond of numpy for 20 candidates, scored here.
            # On the model's thread it would wait behind any other search's encode (hundreds
            # of milliseconds) and every other rerank.
            return maxsims(query_tokens, tokens)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread, self._encode_and_score, query, list(passages), tokens, query_tokens
        )

    def _encode_and_score(
        self,
        query: str,
        passages: list[str],
        tokens: list[Vectors | None],
        query_tokens: Vectors | None,
    ) -> list[float]:
        """On the model's thread: encode what was not stored (the query, in bm25 mode; the
        candidates indexed without token vectors), then score as ``score`` does."""
        from quarry.ingest.token_vectors import unpack

        if query_tokens is None:
            encoded = self.model.encode_queries_with_tokens([query]).token_vectors
            query_tokens = unpack(encoded[0] if encoded else None)
        assert query_tokens is not None
        missing = [i for i, found in enumerate(tokens) if found is None]
        if missing:
            if not self.encoded:  # once per process: the cost is per search until mended
                log.warning(
                    "late interaction: candidates without stored token vectors are encoded "
                    "at search time (hundreds of milliseconds)",
                    candidates=len(missing),
                    fix="workers queue the refill as they start; quarry reindex queues it now",
                )
            self.encoded += len(missing)
            fresh = self.model.encode_with_tokens(
                [passages[i] for i in missing], self.pass_size, self.pass_length_ratio
            ).stored()
            tokens = list(tokens)
            for i, packed in zip(missing, fresh, strict=True):
                tokens[i] = unpack(packed)  # as if stored: every candidate alike
        return maxsims(query_tokens, tokens)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._thread.shutdown)


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder, run in a thread so the event loop stays free."""

    depth = 50
    fused_weight = 0.0
    trust_power = 0.0
    token_vectors_model: str | None = None

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
        self,
        query: str,
        passages: Sequence[str],
        *,
        project_id: UUID | None = None,
        token_vectors: Sequence[bytes | None] | None = None,
        query_token_vectors: bytes | None = None,
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

    depth = 50
    fused_weight = 0.0
    trust_power = 0.0
    token_vectors_model: str | None = None

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
        self,
        query: str,
        passages: Sequence[str],
        *,
        project_id: UUID | None = None,
        token_vectors: Sequence[bytes | None] | None = None,
        query_token_vectors: bytes | None = None,
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


def late_interaction_possible(embedder: object) -> TypeGuard[LocalEmbedder]:
    """Whether late interaction can read this embedder's model: only a local one has token
    vectors to give."""
    from quarry.ingest.embedders import LocalEmbedder

    return isinstance(embedder, LocalEmbedder)


def late_interaction_reranker(embedder: object) -> LateInteractionReranker:
    """The late-interaction reranker over the local embedding model, or a start-up error."""
    from quarry.db.database import StartupError

    if not late_interaction_possible(embedder):
        name = getattr(embedder, "model_id", type(embedder).__name__)
        raise StartupError(
            "QUARRY_RERANKER=late_interaction compares the token vectors of the local "
            f"embedding model, and the configured embedder ({name}) is not local.\n"
            "  Use the local embedder (the default), or another reranker."
        )
    return LateInteractionReranker(embedder.model)
