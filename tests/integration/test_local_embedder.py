"""The bundled model behind LocalEmbedder: micro-batching, and a query lane of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from pathlib import Path

import numpy as np

from quarry.ingest.embedders import BFLOAT16_MIN_AGREEMENT, LocalEmbedder, torch_thread_pool
from quarry.ingest.factory import build_embedder
from quarry.settings import Settings

PASSAGE = (
    "Tumour suppressor p53 halts the cell cycle after DNA damage, giving the cell time to "
    "repair its genome or, failing that, to undergo apoptosis. "
)


async def test_a_query_vector_is_the_models_own(embedder: LocalEmbedder, minilm_float32) -> None:
    """The query lane gives the float32 model's vectors. The indexing lane runs in bfloat16
    where this CPU does that faster, and then agrees with them as that precision was checked
    to when the model loaded."""
    queries = ["p53 and the cell cycle", "  padded with spaces  ", "x " * 400]  # the last is cut
    indexed = await embedder.embed(queries)
    float32 = minilm_float32.encode(queries)
    for query, as_indexed, expected in zip(queries, indexed, float32, strict=True):
        vector = await embedder.embed_query(query)
        assert vector.shape == (embedder.dimensions,)
        assert np.allclose(vector, expected, atol=1e-5)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        if embedder.model.precision == "float32":
            assert np.allclose(vector, as_indexed, atol=1e-5)
        else:
            assert float(vector @ as_indexed) >= BFLOAT16_MIN_AGREEMENT


async def test_concurrent_callers_share_the_model_threads_calls(minilm) -> None:
    texts = [f"{PASSAGE} Variant {i}." for i in range(6)]
    local = LocalEmbedder(minilm, index_workers=2)
    try:
        vectors = await asyncio.gather(*(local.embed([text]) for text in texts))
        assert local.calls == 2  # six documents, one call per model thread
        together = await local.embed(texts)  # one request, split between the two threads
    finally:
        await local.aclose()
    assert np.allclose(np.concatenate(vectors), together, atol=1e-5)
    # As the model alone, on one torch thread as each lane runs: in bfloat16 the thread count
    # changes how a product is split and summed (on an Intel Xeon with AMX, by up to 1.4e-5).
    with torch_thread_pool(1, 1) as one:
        alone = one.submit(minilm.encode, texts).result()
    assert np.allclose(together, alone, atol=1e-5)


async def test_a_query_does_not_wait_behind_an_indexing_batch(embedder: LocalEmbedder) -> None:
    finished: list[str] = []

    async def index() -> None:
        await embedder.embed([PASSAGE * 3 + str(i) for i in range(192)])  # seconds of work
        finished.append("index")

    async def query() -> None:
        await asyncio.sleep(0.2)  # the indexing batch is inside the model by now
        assert finished == []  # the batch is still being encoded
        await embedder.embed_query("what halts the cell cycle?")
        finished.append("query")

    await asyncio.gather(index(), query())
    assert finished == ["query", "index"]


async def test_the_lanes_keep_their_thread_counts_to_themselves(minilm) -> None:
    import concurrent.futures
    import threading

    import torch

    default = torch.get_num_threads()
    local = LocalEmbedder(minilm, index_workers=3, query_threads=1)
    try:
        await local.embed_query("anything")
        in_lane = await asyncio.wrap_future(local.query_lane.thread.submit(torch.get_num_threads))
        barrier = threading.Barrier(3)  # one task on each of the three indexing threads

        def count() -> int:
            barrier.wait(timeout=10)
            return torch.get_num_threads()

        indexing = [local.index_lane.thread.submit(count) for _ in range(3)]
        in_index_lane = [f.result(timeout=10) for f in indexing]
        with concurrent.futures.ThreadPoolExecutor(1) as later:  # started after the lanes
            elsewhere = later.submit(torch.get_num_threads).result()
    finally:
        await local.aclose()
    assert in_lane == 1
    assert in_index_lane == [1, 1, 1]
    assert elsewhere == torch.get_num_threads() == default


async def test_the_model_thread_takes_the_gil_back_quickly(minilm) -> None:
    import sys

    from quarry.ingest.embedders import GIL_SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        local = LocalEmbedder(minilm)
        await local.aclose()
        assert abs(sys.getswitchinterval() - GIL_SWITCH_INTERVAL_S) < 1e-9
        sys.setswitchinterval(0.0001)  # a process that chose a shorter one keeps it
        local = LocalEmbedder(minilm)
        await local.aclose()
        assert abs(sys.getswitchinterval() - 0.0001) < 1e-9
    finally:
        sys.setswitchinterval(before)


def test_passes_by_length_give_the_models_own_vectors(minilm_float32) -> None:
    texts = [PASSAGE * 4, "short", PASSAGE, "p53", PASSAGE * 2 + "and more", "x " * 400, ""]
    model = minilm_float32.model
    expected = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(minilm_float32.encode(texts), expected, atol=1e-5)


def _niceness_of_each_thread(pool: concurrent.futures.ThreadPoolExecutor, threads: int) -> set[int]:
    """The nice value of each of a pool's threads, asked on the thread itself."""
    together = threading.Barrier(threads)  # one task per thread: each waits for the others

    def mine() -> int:
        together.wait(timeout=10)
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    return {f.result() for f in [pool.submit(mine) for _ in range(threads)]}


async def test_indexing_threads_give_way_to_the_rest_of_the_process(minilm) -> None:
    """The indexing lane's threads run at a lower CPU priority, by the configured increment
    (Linux); the query lane's and the calling thread's stay as they were."""
    process = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    settings = Settings(data_dir=Path("/nonexistent"), index_niceness=7)
    local = build_embedder(settings, minilm)
    assert isinstance(local, LocalEmbedder)
    try:
        vectors = await local.embed([PASSAGE])  # the threads still encode
        indexing = _niceness_of_each_thread(local.index_lane.thread, local.index_lane.workers)
        query = _niceness_of_each_thread(local.query_lane.thread, local.query_lane.workers)
    finally:
        await local.aclose()
    assert vectors.shape == (1, local.dimensions)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process
    assert query == {process}
    assert indexing == ({min(19, process + 7)} if sys.platform == "linux" else {process})
