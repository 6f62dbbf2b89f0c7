"""The micro-batcher in front of the local model's threads, with an encode function that
records what it was given (the model itself is exercised in test_local_embedder.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from quarry.ingest.embedders import Encoded, _Lane


class Recorder:
    """Encodes a text "n" as the vector [n, n] with the token vectors b"n"; records each
    call's size and thread."""

    def __init__(self, delay: float = 0.05, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def __call__(self, texts: list[str]) -> Encoded:
        with self.lock:
            self.calls.append((threading.current_thread().name, list(texts)))
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(self.delay)
        with self.lock:
            self.inside -= 1
        if self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on}")
        vectors = np.array([[float(t), float(t)] for t in texts], dtype=np.float32)
        return Encoded(vectors, [t.encode() for t in texts])


def texts(start: int, stop: int) -> list[str]:
    return [str(n) for n in range(start, stop)]


async def test_a_large_request_is_split_across_the_threads_and_reassembled() -> None:
    encode = Recorder()
    lane = _Lane("test-embed", encode, window=4, threads=1, workers=2)
    try:
        encoded = await lane.submit(texts(0, 10))
    finally:
        await lane.aclose()
    assert encoded.vectors[:, 0].tolist() == list(range(10))  # in the caller's order
    assert encoded.token_vectors == [t.encode() for t in texts(0, 10)]  # and so are these
    sizes = [len(call) for _, call in encode.calls]
    assert sizes[:2] == [4, 4]
    assert max(sizes) <= 4  # never more than the window
    assert sorted(t for _, call in encode.calls for t in call) == sorted(texts(0, 10))  # once each
    assert len({thread for thread, _ in encode.calls}) == 2
    assert encode.most_inside == 2  # the two threads encoded at the same time
    assert lane.calls == len(sizes)
    assert lane.busy_seconds > 0


async def test_waiting_callers_are_shared_among_the_free_threads() -> None:
    encode = Recorder()
    lane = _Lane("test-embed", encode, window=512, threads=1, workers=2)
    try:
        results = await asyncio.gather(*(lane.submit([str(n)]) for n in range(6)))
    finally:
        await lane.aclose()
    assert [float(v.vectors[0, 0]) for v in results] == [0, 1, 2, 3, 4, 5]
    assert sorted(len(call) for _, call in encode.calls) == [3, 3]  # two calls, not six


async def test_one_thread_gathers_every_waiting_caller_into_one_call() -> None:
    encode = Recorder()
    lane = _Lane("test-embed", encode, window=512, threads=1, workers=1)
    try:
        await lane.submit(["0"])  # the thread is idle: encoded at once
        first = lane.submit(texts(1, 3))
        waiting = [lane.submit([str(n)]) for n in range(3, 8)]
        results = await asyncio.gather(first, *waiting)
    finally:
        await lane.aclose()
    assert [call for _, call in encode.calls] == [["0"], texts(1, 8)]
    assert np.concatenate([r.vectors for r in results])[:, 0].tolist() == list(range(1, 8))


async def test_a_failed_slice_fails_its_request_once_and_the_lane_goes_on() -> None:
    encode = Recorder(fail_on="5")
    lane = _Lane("test-embed", encode, window=3, threads=1, workers=2)
    try:
        with pytest.raises(ValueError, match="cannot encode 5"):
            await lane.submit(texts(0, 12))
        after = await lane.submit(texts(20, 22))  # the lane still works
    finally:
        await lane.aclose()
    assert after.vectors[:, 0].tolist() == [20, 21]
    encoded = [t for _, call in encode.calls for t in call]
    assert len(encoded) < 12 + 2  # the failed request's later slices were dropped, not encoded


async def test_a_cancelled_caller_s_texts_are_not_encoded() -> None:
    encode = Recorder(delay=0.2)
    lane = _Lane("test-embed", encode, window=512, threads=1, workers=1)
    try:
        busy = asyncio.create_task(lane.submit(["0"]))
        await asyncio.sleep(0.05)  # "0" is inside the model
        gone = asyncio.create_task(lane.submit(["1"]))
        await asyncio.sleep(0)
        gone.cancel()
        kept = await lane.submit(["2"])
        await busy
    finally:
        await lane.aclose()
    assert [call for _, call in encode.calls] == [["0"], ["2"]]
    assert kept.vectors[:, 0].tolist() == [2]


def test_encoded_parts_join_back_in_order_and_lose_token_vectors_any_part_lacks() -> None:
    whole = Encoded(np.arange(8, dtype=np.float32).reshape(4, 2), [b"a", b"b", b"c", b"d"])
    parts = [whole.part(0, 1), whole.part(1, 3), whole.part(3, 4)]
    assert [len(p) for p in parts] == [1, 2, 1]
    joined = Encoded.join(parts)
    assert joined.vectors.tolist() == whole.vectors.tolist()
    assert joined.token_vectors == [b"a", b"b", b"c", b"d"]
    assert Encoded.join([parts[0], Encoded(parts[1].vectors)]).token_vectors is None
    assert joined.stored() == [b"a", b"b", b"c", b"d"]
    assert Encoded(parts[1].vectors).stored() == [None, None]  # one per text, none kept


def test_passes_hold_texts_of_about_the_same_length() -> None:
    from quarry.ingest.embedders import length_passes

    lengths = [256, 40, 256, 250, 60, 256, 256, 256, 256, 256, 256, 256, 230, 39]
    passes = length_passes(lengths, batch_size=8, ratio=0.9)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))  # each once
    # eight of the nine 256s; the ninth with 250; 230 (under 0.9 of 256); 60; 40 with 39
    rest = [sorted(lengths[i] for i in p) for p in passes[1:]]
    assert rest == [[250, 256], [230], [60], [39, 40]]
    assert len(passes[0]) == 8
    for indices in passes:
        longest = max(lengths[i] for i in indices)
        assert all(lengths[i] >= 0.9 * longest for i in indices)
    assert length_passes([], batch_size=8) == []
