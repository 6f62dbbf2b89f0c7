"""BM25's per-chunk sum and top k (quarry.search.bm25) against a plain Python sum, and the
reading of Postgres' binary arrays."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from quarry.search.bm25 import TermPostings, read_array, top_chunks


def _array_send(values: list, element: str, oid: int) -> bytes:
    """What Postgres' array_send makes of a one-dimensional array without nulls."""
    size = struct.calcsize(">" + element)
    head = struct.pack(">iiiii", 1, 0, oid, len(values), 1)
    return head + b"".join(struct.pack(">i" + element, size, v) for v in values)


def test_read_array_reads_int8_and_float8_and_empty() -> None:
    ids = [3, -1, 2**40, 0]
    assert read_array(_array_send(ids, "q", 20), "int64").tolist() == ids
    parts = [0.5, 1e-300, 2.25]
    assert read_array(_array_send(parts, "d", 701), "float64").tolist() == parts
    assert read_array(None, "int64").size == 0  # array_agg over no rows
    assert read_array(struct.pack(">iii", 0, 0, 20), "int64").size == 0  # '{}'


def test_read_array_refuses_what_it_does_not_read() -> None:
    two_dims = struct.pack(">iiiiiii", 2, 0, 20, 1, 1, 1, 1) + struct.pack(">iq", 8, 1)
    with pytest.raises(ValueError, match="one-dimensional"):
        read_array(two_dims, "int64")
    with pytest.raises(ValueError, match="8 bytes"):  # int4 elements read as int8
        read_array(_array_send([1, 2], "i", 23), "int64")


def _reference(terms: list[TermPostings], limit: int) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for term in terms:
        for chunk, part in zip(term.chunk_ids.tolist(), term.tf_parts.tolist(), strict=True):
            scores[chunk] = scores.get(chunk, 0.0) + term.idf * part
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[: max(limit, 0)]


def test_top_chunks_matches_a_plain_sum_exactly_over_random_postings() -> None:
    rng = random.Random(11)
    for _ in range(300):
        universe = rng.randint(1, 400)
        terms = []
        for _ in range(rng.randint(0, 12)):
            chunks = sorted(rng.sample(range(10**6, 10**6 + universe), rng.randint(0, universe)))
            if rng.random() < 0.3:
                rng.shuffle(chunks)  # the sum does not rely on chunk order
            # Coarse parts make equal scores common, so ties are exercised.
            parts = [rng.choice([0.5, 1.0, 1.5, rng.random()]) for _ in chunks]
            idf = rng.choice([1.0, 2.0, rng.random() * 5])
            terms.append(TermPostings(idf, np.array(chunks, np.int64), np.array(parts)))
        limit = rng.choice([0, 1, 5, 10, 100, 1000])
        chunk_ids, scores = top_chunks(terms, limit)
        expected = _reference(terms, limit)
        # The same chunks, in the same order (ties to the lower id), with the same sums to
        # the last bit (each chunk's parts added in the order of the terms).
        assert list(zip(chunk_ids.tolist(), scores.tolist(), strict=True)) == expected


def test_top_chunks_of_nothing() -> None:
    empty = TermPostings(1.0, np.empty(0, np.int64), np.empty(0))
    assert top_chunks([], 10)[0].size == 0
    assert top_chunks([empty, empty], 10)[0].size == 0
