"""Embedders: text in, unit-length float32 vectors out, with the model id stored beside them.

``Embedder`` is the seam. Implementations: ``LocalEmbedder`` (a sentence-transformers model,
the bundled all-MiniLM-L6-v2 by default, never fetched from a hub), ``OpenAICompatibleEmbedder``
(any ``/v1/embeddings`` server: OpenAI, vLLM, Ollama, TEI) and ``quarry.testing.HashEmbedder``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import io
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import structlog
from tokenizers import Tokenizer

Vectors = npt.NDArray[np.float32]  # one row per text
Vector = npt.NDArray[np.float32]  # one text's
log = structlog.get_logger(__name__)


@dataclass
class Encoded:
    """What an encode gives for a list of texts: a vector each, and, where the embedder keeps
    them (``LocalEmbedder(keep_token_vectors=True)``), each text's token vectors in their
    stored form (``quarry.ingest.token_vectors``)."""

    vectors: Vectors
    token_vectors: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    def stored(self) -> list[bytes | None]:
        """Each text's token vectors in their stored form, None where not kept."""
        if self.token_vectors is None:
            return [None] * len(self.vectors)
        return list(self.token_vectors)

    def part(self, start: int, end: int) -> Encoded:
        tokens = self.token_vectors
        return Encoded(self.vectors[start:end], None if tokens is None else tokens[start:end])

    @staticmethod
    def join(parts: Sequence[Encoded]) -> Encoded:
        vectors = np.concatenate([part.vectors for part in parts])
        if any(part.token_vectors is None for part in parts):
            return Encoded(vectors)
        return Encoded(vectors, [t for part in parts for t in part.token_vectors or ()])


class Embedder(Protocol):
    model_id: str
    dimensions: int
    max_tokens: int  # the model's input limit, special tokens included
    tokenizer: Tokenizer | None  # measures tokens exactly as the model does; None: words

    async def embed(self, texts: Sequence[str]) -> Vectors: ...

    async def embed_query(self, query: str) -> Vector:
        """One search query's vector. Models that embed queries differently from passages
        (an instruction, a separate lane) do it here; most call ``embed``."""
        ...

    async def aclose(self) -> None: ...


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer that counts every token: model files often ship with truncation and
    padding switched on (MiniLM's truncates at 128), which would hide over-long chunks."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


# A pass of the local model ends where the next text is shorter than this share of its longest.
PASS_LENGTH_RATIO = 0.9

Precision = Literal["auto", "float32", "bfloat16"]
# "auto" runs the local model in bfloat16 only if it takes at most this share of float32's time
# and its vectors agree with float32's to this cosine on every sample (measured on AVX-512 BF16
# cores: 0.99996 on the calibration texts, 0.99989 at worst on the tests', the empty text).
BFLOAT16_MAX_TIME_SHARE = 0.8
BFLOAT16_MIN_AGREEMENT = 0.999
_CALIBRATION_QUERY = "Vitamin D supplementation lowers the risk of fractures in older adults."
_CALIBRATION_PASSAGE = " ".join(
    ["Randomised trials measured bone density, falls and fractures over five years;"] * 16
)


def prefer_bfloat16(float32_seconds: float, bfloat16_seconds: float, agreement: float) -> bool:
    """Whether "auto" runs the model in bfloat16, given both timings and the lowest cosine
    between their vectors."""
    return (
        bfloat16_seconds <= BFLOAT16_MAX_TIME_SHARE * float32_seconds
        and agreement >= BFLOAT16_MIN_AGREEMENT
    )


def lacks_native_bfloat16(machine: str, avx512_bf16: bool, amx: bool) -> bool:
    """Whether this CPU surely emulates bfloat16, so "auto" need not time it: an x86 CPU with
    neither AVX-512 BF16 nor AMX. There every bfloat16 product is converted in software; on
    an AMD EPYC with AVX2 a pass took 6.7 times float32's (1.3 s against 0.19 s for the
    calibration texts), and timing that at every model load cost about 8 s. Elsewhere (other
    architectures, x86 with either), only timing tells."""
    return machine.lower() in ("x86_64", "amd64") and not (avx512_bf16 or amx)


def _cpu_lacks_native_bfloat16() -> bool:
    import torch

    try:  # torch's own CPU probes (private: if they go, auto times as before)
        avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False
    return lacks_native_bfloat16(platform.machine(), avx512_bf16, amx)


QueryRuntime = Literal["auto", "torch", "onnx"]


class OnnxTransformer:
    """A model's transformer (its first sentence-transformers module, in float32) exported to
    ONNX and run by ONNX Runtime on one thread, for search queries.

    A query is a few dozen tokens, where PyTorch's eager mode spends most of a forward pass
    dispatching operations one by one from Python; ONNX Runtime runs the same graph as one
    call that holds no GIL. On an AMD EPYC core (AVX2) a SciFact query took 10 ms
    against 21 ms through sentence-transformers, with the same vectors (cosine 1.0 to six
    places; bench/README.md). The export is traced in memory when the model loads (about
    2 s) with a padded batch of two, so the traced graph keeps the attention mask's path for
    batches of queries of different lengths. Pooling and the layers after the transformer
    stay the model's own modules."""

    def __init__(self, model: Any) -> None:
        import onnxruntime
        import torch

        transformer = model[0].auto_model

        class TokenEmbeddings(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.transformer(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=False
                )[0]

        example = model.preprocess([_CALIBRATION_QUERY, "a shorter query"])
        axes = {0: "texts", 1: "tokens"}
        graph = io.BytesIO()
        with warnings.catch_warnings(), torch.inference_mode():
            # The TorchScript exporter warns that it is deprecated and that traced shapes may
            # be constants; the dynamic axes and the tests (test_query_runtime.py)
            # answer the second, torch==2.13.0 is pinned for the first.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                TokenEmbeddings().eval(),
                (example["input_ids"], example["attention_mask"]),
                graph,  # type: ignore[arg-type]  # the TorchScript exporter writes to files too
                input_names=["input_ids", "attention_mask"],
                output_names=["token_embeddings"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_embeddings": axes},
                opset_version=17,
                dynamo=False,
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            graph.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, input_ids: Any, attention_mask: Any) -> Any:
        feeds = {
            "input_ids": input_ids.astype(np.int64),
            "attention_mask": attention_mask.astype(np.int64),
        }
        return self.session.run(["token_embeddings"], feeds)[0]


def _token_embeddings_to_float32(module: Any, inputs: Any, features: Any) -> Any:
    features["token_embeddings"] = features["token_embeddings"].float()
    return features


def length_passes(
    lengths: Sequence[int], batch_size: int, ratio: float = PASS_LENGTH_RATIO
) -> list[list[int]]:
    """Indices of texts, longest first, cut into passes of at most ``batch_size`` whose
    texts are all at least ``ratio`` of the pass's longest."""
    passes: list[list[int]] = [[]]
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        current = passes[-1]
        if current and (len(current) == batch_size or lengths[i] < ratio * lengths[current[0]]):
            passes.append(current := [])
        current.append(i)
    return passes if passes[0] else []


class SentenceTransformerModel:
    """A loaded sentence-transformers model (heavy; load once per process and share)."""

    def __init__(
        self,
        path: Path,
        model_id: str,
        batch_size: int = 8,
        precision: Precision = "auto",
        query_runtime: QueryRuntime = "auto",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local path must never reach a hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.model_id = model_id
        self.batch_size = batch_size
        max_tokens = self.model.max_seq_length
        dimensions = self.model.get_embedding_dimension()
        if max_tokens is None or dimensions is None:
            raise RuntimeError(f"{path} does not declare its input limit and dimensions")
        self.max_tokens = int(max_tokens)
        self.dimensions = int(dimensions)
        self.tokenizer = load_tokenizer(path / "tokenizer.json")
        # Which token ids are punctuation: a passage's are not stored for late interaction.
        from quarry.ingest.token_vectors import punctuation

        self._punctuation = punctuation(self.tokenizer.get_vocab())
        # The first call sets the tokenizer's padding and truncation, which mutates it: do it
        # here, before threads share it (the Rust tokenizer refuses a change while in use).
        self.encode(["warm up"])
        self.query_runtime: Literal["torch", "onnx"] = "torch"
        self._onnx: OnnxTransformer | None = None
        if query_runtime != "torch":
            self._load_onnx(forced=query_runtime == "onnx")
        self.precision: Literal["float32", "bfloat16"] = "float32"
        self.calibration: dict[str, float] = {}
        if precision != "float32":
            self._choose_precision(forced=precision == "bfloat16")

    def _load_onnx(self, forced: bool) -> None:
        """Queries through ONNX Runtime (``OnnxTransformer``); with "auto", a model that does
        not export (or a missing onnxruntime) keeps queries on PyTorch, with a warning."""
        started = time.perf_counter()
        try:
            self._onnx = OnnxTransformer(self.model)
        except Exception as exc:
            if forced:
                raise
            log.warning("queries stay on PyTorch: the ONNX export failed", error=str(exc))
            return
        self.query_runtime = "onnx"
        log.info("query runtime", runtime="onnx", seconds=round(time.perf_counter() - started, 2))

    def encode_queries(self, texts: list[str]) -> Vectors:
        """Unit vectors of search queries: through ONNX Runtime when it is loaded, else as
        ``encode``. The vectors are the same either way (cosine above 0.99999)."""
        if self._onnx is None:
            return self.encode(texts)
        return self._encode_queries_onnx(texts)[0]

    def encode_queries_with_tokens(self, texts: list[str]) -> Encoded:
        """``encode_queries``' vectors, and from the same pass each query's token vectors in
        the stored form (``quarry.ingest.token_vectors.pack``), so late interaction needs no
        pass of its own and rounds both sides alike."""
        from quarry.ingest.token_vectors import pack

        if self._onnx is None:  # a query keeps every token, punctuation too
            vectors, tokens, _ = self._forward(texts)
        else:
            vectors, tokens = self._encode_queries_onnx(texts)
        return Encoded(vectors, [pack(t) for t in tokens])

    def _encode_queries_onnx(self, texts: list[str]) -> tuple[Vectors, list[Vectors]]:
        """Unit vectors and unit token vectors (padding left out) of queries through ONNX
        Runtime, pooled by the model's own modules."""
        import torch

        features = self.model.preprocess(texts)
        tokens = self._onnx_tokens(features)
        mask = features["attention_mask"].numpy().astype(bool)
        features["token_embeddings"] = torch.from_numpy(tokens)
        with torch.inference_mode():
            for module in list(self.model)[1:]:  # pooling and whatever follows it
                features = module(features)
        pooled = normalize(features["sentence_embedding"].float().numpy())
        return pooled, [normalize(tokens[row][mask[row]]) for row in range(len(texts))]

    def _onnx_tokens(self, features: dict[str, Any]) -> Any:
        assert self._onnx is not None
        return self._onnx(features["input_ids"].numpy(), features["attention_mask"].numpy())

    def _choose_precision(self, forced: bool) -> None:
        """Run the transformer in bfloat16 if this CPU does it faster with the same vectors.

        Its weights in bfloat16 (8 bits of mantissa; products still sum in float32) give
        vectors within a cosine of 1e-4 of float32's, and where the CPU multiplies bfloat16
        natively (AVX-512 BF16 on the cores measured) a pass takes 0.6-0.7 of the time
        (bench/README.md). Elsewhere it is emulated and can be slower, so "auto" times both on
        a query and a long chunk, on one torch thread as the lanes run, and keeps bfloat16
        only within ``BFLOAT16_MAX_TIME_SHARE`` of float32's time and with agreeing vectors.
        Only the transformer (the first module) changes: its token vectors go back to float32
        before pooling, so pooling and any layer after it run as before."""
        import torch

        if not forced and _cpu_lacks_native_bfloat16():
            self.calibration = {"native_bfloat16": 0.0}  # nothing timed: emulated, so slower
            log.info("embedding model precision", precision=self.precision, **self.calibration)
            return
        candidate = copy.deepcopy(self.model)
        candidate[0].to(torch.bfloat16)
        candidate[0].register_forward_hook(_token_embeddings_to_float32)
        samples = [_CALIBRATION_QUERY], [_CALIBRATION_PASSAGE] * 2

        def timed(model: Any) -> tuple[float, Vectors]:
            best, vectors = float("inf"), []
            for _ in range(3):
                started = time.perf_counter()
                vectors = [self._encode_pass(texts, model) for texts in samples]
                best = min(best, time.perf_counter() - started)
            return best, np.vstack(vectors)

        with torch_thread_pool(1, 1) as pool:
            pool.submit(timed, candidate).result()  # warm up
            fp32_s, fp32 = pool.submit(timed, self.model).result()
            bf16_s, bf16 = pool.submit(timed, candidate).result()
        agreement = float(np.min(np.sum(fp32 * bf16, axis=1)))
        self.calibration = {
            "float32_ms": round(fp32_s * 1000, 2),
            "bfloat16_ms": round(bf16_s * 1000, 2),
            "agreement": round(agreement, 6),
        }
        if forced or prefer_bfloat16(fp32_s, bf16_s, agreement):
            self.model = candidate
            self.precision = "bfloat16"
        log.info("embedding model precision", precision=self.precision, **self.calibration)

    def encode(self, texts: list[str]) -> Vectors:
        """Unit vectors of ``texts``, in passes of texts of about the same length.

        Every text in a pass is padded to the pass's longest. sentence-transformers sorts a
        call's texts by length and cuts passes of ``batch_size``; over a window of a few dozen
        chunks (long first chunks, short last ones) a pass often mixes both, and the short
        ones are padded to the long: 1.15 times the real tokens over SciFact's windows of 15.
        So a pass here also ends where the next text is shorter than ``PASS_LENGTH_RATIO`` of
        the pass's longest (1.07 times; 12% less time, bench/README.md). On CPU a pass costs
        about the same per token whatever its size, so the extra passes are free."""
        if len(texts) <= 1:
            return self._encode_pass(texts)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for indices in length_passes(self._lengths(texts), self.batch_size):
            vectors[indices] = self._encode_pass([texts[i] for i in indices])
        return vectors

    def token_vectors(
        self, texts: list[str], batch_size: int = 0, ratio: float = PASS_LENGTH_RATIO
    ) -> list[Vectors]:
        """Each text's token vectors as the transformer leaves them, before pooling: one unit
        row per token the model read (special tokens included, padding left out). In passes as
        ``_passes`` cuts them; in bfloat16 where the model runs in it."""
        out = [np.zeros((0, self.dimensions), dtype=np.float32) for _ in texts]
        for indices, (_, tokens, _) in self._passes(texts, batch_size, ratio):
            for row, i in enumerate(indices):
                out[i] = tokens[row]
        return out

    def encode_with_tokens(
        self, texts: list[str], batch_size: int = 0, ratio: float = PASS_LENGTH_RATIO
    ) -> Encoded:
        """``encode``'s vectors, and from the same passes each text's token vectors in the
        form they are stored in: for indexing where late interaction is on, and for a
        candidate late interaction finds nothing stored for. With the default passes the
        vectors are ``encode``'s (same passes, same model)."""
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        stored: list[bytes] = [b""] * len(texts)
        for indices, (pooled, tokens, ids) in self._passes(texts, batch_size, ratio):
            vectors[indices] = pooled
            for row, i in enumerate(indices):
                stored[i] = self._pack_passage(tokens[row], ids[row])
        return Encoded(vectors, stored)

    def _passes(
        self, texts: list[str], batch_size: int, ratio: float
    ) -> Iterator[tuple[list[int], tuple[Vectors, list[Vectors], list[Any]]]]:
        """``_forward`` over passes of at most ``batch_size`` texts (0: the model's), cut by
        length as ``encode`` cuts them; each pass's text indices with its result."""
        for indices in length_passes(self._lengths(texts), batch_size or self.batch_size, ratio):
            yield indices, self._forward([texts[i] for i in indices])

    def _pack_passage(self, tokens: Vectors, ids: npt.NDArray[np.int64]) -> bytes:
        """A passage's token vectors in the stored form (``quarry.ingest.token_vectors.pack``),
        its punctuation tokens left out: a query token's best match is never a comma, and on
        SciFact they were an eighth of the rows (bench/README.md)."""
        from quarry.ingest.token_vectors import pack

        return pack(tokens[~self._punctuation[ids]])

    def _forward(self, texts: list[str]) -> tuple[Vectors, list[Vectors], list[Any]]:
        """One pass: the texts' unit vectors, and each text's unit token vectors with their
        token ids (padding left out)."""
        import torch

        features = self.model.preprocess(texts)
        with torch.inference_mode():
            out = self.model(features)
            pooled = normalize(out["sentence_embedding"].float().numpy())
            tokens = out["token_embeddings"].float().numpy()
        mask = features["attention_mask"].numpy().astype(bool)
        ids = features["input_ids"].numpy()
        return (
            pooled,
            [normalize(tokens[row][mask[row]]) for row in range(len(texts))],
            [ids[row][mask[row]] for row in range(len(texts))],
        )

    def _lengths(self, texts: list[str]) -> list[int]:
        """Each text's length in tokens as the model reads it (cut at its input limit)."""
        return [
            min(len(encoding.ids), self.max_tokens)
            for encoding in self.tokenizer.encode_batch(texts)
        ]

    def _encode_pass(self, texts: list[str], model: Any = None) -> Vectors:
        vectors = (self.model if model is None else model).encode(
            texts,
            batch_size=max(len(texts), 1),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions)


@dataclass
class _Request:
    texts: Sequence[str]
    future: asyncio.Future[Encoded]
    parts: dict[int, Encoded] = field(default_factory=dict)  # by start, when split across calls
    remaining: int = 0  # texts not yet encoded


@dataclass
class _Slice:
    request: _Request
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class _Lane:
    """Encode threads fed by one micro-batcher.

    Callers that arrive while the threads are busy are gathered and encoded together. When a
    thread is free, it takes its share of what is waiting: the pending texts divided among the
    free threads, at most ``window``; a request larger than that is split across calls (and
    threads) and answered when its last slice is done. Each thread runs torch with ``threads``
    intra-op threads, set when it starts, which is at once (``torch_thread_pool``), at the
    process's CPU priority lowered by ``niceness``.
    """

    def __init__(
        self,
        name: str,
        encode: Callable[[list[str]], Encoded],
        window: int,
        threads: int,
        workers: int = 1,
        niceness: int = 0,
    ) -> None:
        self.encode = encode
        self.window = window
        self.workers = workers
        self.busy_seconds = 0.0  # time with at least one call inside the model
        self.calls = 0
        self._pending: list[_Slice] = []
        self._free = workers
        self._busy_since = 0.0
        self._runner: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()  # keeps running calls referenced
        self._wake: asyncio.Event | None = None
        self._name = name
        self.thread = torch_thread_pool(workers, threads, name, niceness)

    async def submit(self, texts: Sequence[str]) -> Encoded:
        future: asyncio.Future[Encoded] = asyncio.get_running_loop().create_future()
        self._pending.append(_Slice(_Request(texts, future, remaining=len(texts)), 0, len(texts)))
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()  # of this loop
            self._runner = asyncio.create_task(self._run(self._wake), name=f"{self._name}-batcher")
        else:
            assert self._wake is not None
            self._wake.set()
        return await future

    async def _run(self, wake: asyncio.Event) -> None:
        while self._pending or self._free < self.workers:
            await asyncio.sleep(0)  # let callers scheduled in this tick join the batch
            while self._pending and self._free:
                batch = self._take(self._share())
                if batch:
                    self._start(batch, wake)
            if self._pending or self._free < self.workers:
                wake.clear()
                await wake.wait()

    def _share(self) -> int:
        waiting = sum(len(piece) for piece in self._pending)
        return max(1, min(self.window, -(-waiting // self._free)))

    def _take(self, limit: int) -> list[_Slice]:
        batch: list[_Slice] = []
        size = 0
        while self._pending and size < limit:
            piece = self._pending[0]
            if piece.request.future.done():  # its caller is gone, or another slice failed
                self._pending.pop(0)
                continue
            if len(piece) > limit - size:  # split: the rest stays first in line
                cut = piece.start + limit - size
                batch.append(_Slice(piece.request, piece.start, cut))
                piece.start = cut
            else:
                batch.append(self._pending.pop(0))
            size += len(batch[-1])
        return batch

    def _start(self, batch: list[_Slice], wake: asyncio.Event) -> None:
        if self._free == self.workers:
            self._busy_since = time.perf_counter()
        self._free -= 1
        task = asyncio.create_task(self._call(batch, wake), name=f"{self._name}-call")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[_Slice], wake: asyncio.Event) -> None:
        texts = [text for piece in batch for text in piece.request.texts[piece.start : piece.end]]
        loop = asyncio.get_running_loop()
        try:
            encoded: Encoded | None = await loop.run_in_executor(self.thread, self.encode, texts)
        except Exception as exc:
            for piece in batch:
                if not piece.request.future.done():
                    piece.request.future.set_exception(exc)
            encoded = None
        finally:
            self._free += 1
            if self._free == self.workers:
                self.busy_seconds += time.perf_counter() - self._busy_since
            wake.set()
        if encoded is None:
            return
        self.calls += 1
        offset = 0
        for piece in batch:
            request = piece.request
            part = encoded.part(offset, offset + len(piece))
            offset += len(piece)
            if request.future.done():
                continue
            if len(piece) == len(request.texts):
                request.future.set_result(part)
                continue
            request.parts[piece.start] = part
            request.remaining -= len(piece)
            if request.remaining == 0:
                request.future.set_result(
                    Encoded.join([request.parts[start] for start in sorted(request.parts)])
                )

    async def aclose(self) -> None:
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        self.thread.shutdown(wait=True)


# How long a thread that wants the GIL waits before asking the holder to let go.
GIL_SWITCH_INTERVAL_S = 0.0005


def _shorten_gil_switch_interval() -> None:
    """Let the model's thread take the GIL back quickly.

    torch releases the GIL inside each operation and needs it again between operations: a
    forward pass takes it back thousands of times. While the event loop thread runs Python
    (psycopg, the job queue, a write's parameters), each of those can wait up to the switch
    interval, Python's default 5 ms. In bench/ingest.py on 1,500 documents the pipeline
    reached 0.65 of the bare encode with 5 ms and 0.737 with 0.5 ms; the full corpus did not
    confirm the gain (0.67 against 0.695), and no run got worse (bench/README.md).
    Process-wide, so only ever lowered here."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness`` (a nice increment, at most
    to 19), so the scheduler runs other work first when both want a core.

    On Linux each thread has a nice value of its own, which threads it starts inherit. Other
    systems set it for the whole process, so there this does nothing. Lowering a priority
    needs no privilege; a sandbox that refuses it anyway leaves the thread as it was."""
    if niceness <= 0 or sys.platform != "linux":
        return
    me = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, me)
        os.setpriority(os.PRIO_PROCESS, me, min(19, now + niceness))
    except OSError as exc:
        log.warning("thread priority left as it was", niceness=niceness, error=str(exc))


def _start_model_thread(threads: int, niceness: int) -> None:
    lower_thread_priority(niceness)  # first: the threads torch starts inherit it
    set_torch_threads(threads)


def set_torch_threads(threads: int) -> None:
    """Set the calling thread's torch thread count, for good.

    torch keeps a thread count per thread, read once, at a thread's first parallel operation,
    from a process-wide default that every ``set_num_threads`` call also moves. So the count is
    set and then read here (fixing this thread's), and whoever started the thread puts the
    default back afterwards, or threads started later (a reranker's, say) would inherit it:
    ``torch_thread_pool`` does both.
    """
    import torch

    torch.set_num_threads(threads)
    torch.get_num_threads()


def torch_thread_pool(
    workers: int, threads: int, name: str = "", niceness: int = 0
) -> concurrent.futures.ThreadPoolExecutor:
    """``workers`` threads that run torch on ``threads`` threads each, all started (and their
    counts fixed) before this returns, with the process default put back as it was; their CPU
    priority is lowered by ``niceness`` (``lower_thread_priority``)."""
    import torch

    default = torch.get_num_threads()
    pool = concurrent.futures.ThreadPoolExecutor(
        workers,
        thread_name_prefix=name,
        initializer=_start_model_thread,
        initargs=(threads, niceness),
    )
    started = threading.Barrier(workers)  # each waits for the others: every thread starts
    for _ in range(workers):
        pool.submit(started.wait)
    pool.submit(lambda: None).result()
    torch.set_num_threads(default)
    return pool


@dataclass
class LocalEmbedder:
    """A local model behind two lanes: one for indexing, one for queries.

    Indexing runs one job per document, and most documents have a chunk or two; encoding them
    one call each would leave the model mostly idle on call overhead. So texts to index are
    micro-batched (up to ``window`` of them in one call). Inside a call the model runs passes
    of at most its ``batch_size`` texts of about the same length, each padded to its longest
    text (``SentenceTransformerModel.encode``), so a window of chunks of mixed lengths wastes
    little on padding.

    The indexing lane runs ``index_workers`` threads (default: one per thread torch would
    use, that is per core), each encoding its own calls with ``index_threads`` torch threads
    (default one). One call spread over every core makes torch's threads meet at a barrier
    after each operation, so whenever anything else in the process or on the machine (the
    event loop, Postgres writing the previous batch) takes a core for a moment, every thread
    waits for the one that lost it: beside a process busy 40% of one core, one call with two
    threads kept about 0.6 of its speed alone, two calls of one thread each about 0.8
    (bench/README.md). Independent calls share the cores without waiting on each other.

    A search must not wait behind such a batch (seconds, when a worker runs in the same
    process), nor fight the database for both cores while BM25 runs beside it. Queries have
    their own lane: small batches, ``query_threads`` torch threads (one by default: a query of
    a few dozen tokens gains little from a second thread, and leaves a core to Postgres). All
    lanes run the same model, whose forward pass and tokenizer are safe to call from several
    threads once loaded; a text's vector does not depend on its lane or its batch.

    A lane of its own is not enough while indexing keeps every core busy: the query's thread,
    the search's Postgres backends and the event loop then wait for the scheduler to give them
    a core. ``index_niceness`` lowers the indexing threads' CPU priority (Linux), so whatever
    else wants a core gets it first; the indexing threads lose nothing when it is idle.

    With ``keep_token_vectors`` both lanes also return each text's token vectors in their
    stored form (``embed_for_index``, ``embed_query_with_tokens``), from the same forward
    pass, for late interaction at search time (``quarry.search.rerank``).
    """

    model: SentenceTransformerModel
    window: int = 512
    index_workers: int = 0  # 0: one per thread torch would use
    index_threads: int = 1
    query_window: int = 32
    query_threads: int = 1
    keep_token_vectors: bool = False  # for late interaction (quarry.ingest.token_vectors)
    index_niceness: int = 0  # how much lower the indexing lane's CPU priority is
    model_id: str = field(init=False)
    dimensions: int = field(init=False)
    max_tokens: int = field(init=False)
    tokenizer: Tokenizer | None = field(init=False)

    def __post_init__(self) -> None:
        import torch

        _shorten_gil_switch_interval()
        self.model_id = self.model.model_id
        self.dimensions = self.model.dimensions
        self.max_tokens = self.model.max_tokens
        self.tokenizer = self.model.tokenizer
        cores = torch.get_num_threads()  # the process default, which the lanes leave as it was
        model = self.model
        index_encode: Callable[[list[str]], Encoded] = (
            model.encode_with_tokens
            if self.keep_token_vectors
            else lambda texts: Encoded(model.encode(texts))
        )
        self.index_lane = _Lane(
            "embed",
            index_encode,
            self.window,
            self.index_threads,
            workers=self.index_workers or cores,
            niceness=self.index_niceness,
        )
        query_encode: Callable[[list[str]], Encoded] = (
            model.encode_queries_with_tokens
            if self.keep_token_vectors
            else lambda texts: Encoded(model.encode_queries(texts))
        )
        self.query_lane = _Lane(
            "embed-query",
            query_encode,
            self.query_window,
            self.query_threads,
        )

    @property
    def busy_seconds(self) -> float:
        """Time spent inside the model indexing, for metrics and benchmarks."""
        return self.index_lane.busy_seconds

    @property
    def calls(self) -> int:
        return self.index_lane.calls

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return (await self.embed_for_index(texts)).vectors

    async def embed_for_index(self, texts: Sequence[str]) -> Encoded:
        """The texts' vectors, with their token vectors where this embedder keeps them."""
        if not texts:
            empty = np.zeros((0, self.dimensions), dtype=np.float32)
            return Encoded(empty, [] if self.keep_token_vectors else None)
        return await self.index_lane.submit(texts)

    async def embed_query(self, query: str) -> Vector:
        vector: Vector = (await self.query_lane.submit([query])).vectors[0]
        return vector

    async def embed_query_with_tokens(self, query: str) -> tuple[Vector, bytes | None]:
        """The query's vector and, where this embedder keeps token vectors, its own in the
        stored form, from one pass (late interaction reads them)."""
        encoded = await self.query_lane.submit([query])
        return encoded.vectors[0], encoded.token_vectors[0] if encoded.token_vectors else None

    async def aclose(self) -> None:
        await self.index_lane.aclose()
        await self.query_lane.aclose()


def normalize(vectors: Any) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Vectors = array / norms
    return result


def keeps_token_vectors(embedder: Embedder) -> bool:
    return isinstance(embedder, LocalEmbedder) and embedder.keep_token_vectors


async def embed_for_index(embedder: Embedder, texts: Sequence[str]) -> Encoded:
    """Vectors of texts to index, with their token vectors where the embedder keeps them (only
    the local model has any: ``LocalEmbedder(keep_token_vectors=True)``)."""
    if isinstance(embedder, LocalEmbedder):
        return await embedder.embed_for_index(texts)
    return Encoded(await embedder.embed(texts))
