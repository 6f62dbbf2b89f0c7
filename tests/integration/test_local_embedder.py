"""The bundled model behind LocalEmbedder: micro-batching, and a query lane of its own."""

from __future__ import annotations

import asyncio

import numpy as np

from quarry.ingest.embedders import LocalEmbedder

PASSAGE = (
    "Tumour suppressor p53 halts the cell cycle after DNA damage, giving the cell time to "
    "repair its genome or, failing that, to undergo apoptosis. "
)


async def test_a_query_vector_is_the_models_own(embedder: LocalEmbedder) -> None:
    queries = ["p53 and the cell cycle", "  padded with spaces  ", "x " * 400]  # the last is cut
    alone = await embedder.embed(queries)
    for query, expected in zip(queries, alone, strict=True):
        vector = await embedder.embed_query(query)
        assert vector.shape == (embedder.dimensions,)
        assert np.allclose(vector, expected, atol=1e-5)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


async def test_concurrent_callers_share_one_encode_call(embedder: LocalEmbedder) -> None:
    calls = embedder.calls
    texts = [f"{PASSAGE} Variant {i}." for i in range(6)]
    vectors = await asyncio.gather(*(embedder.embed([text]) for text in texts))
    assert embedder.calls - calls == 1  # six documents, one call into the model
    assert np.allclose(np.concatenate(vectors), await embedder.embed(texts), atol=1e-5)


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


async def test_the_query_lane_keeps_its_thread_count_to_itself(minilm) -> None:
    import concurrent.futures

    import torch

    default = torch.get_num_threads()
    local = LocalEmbedder(minilm, query_threads=1)
    try:
        await local.embed_query("anything")
        in_lane = await asyncio.wrap_future(local.query_lane.thread.submit(torch.get_num_threads))
        with concurrent.futures.ThreadPoolExecutor(1) as later:  # started after the lanes
            elsewhere = later.submit(torch.get_num_threads).result()
    finally:
        await local.aclose()
    assert in_lane == 1
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
