"""BM25's last steps in the service (quarry.search.bm25): reading the packed postings,
Okapi's parts, merging parts read by several connections, and the per-chunk sum and top k
against a plain Python sum."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from quarry.search.bm25 import (
    DENSE_SLOTS_PER_POSTING,
    TermPostings,
    idf,
    okapi_parts,
    pack_shapes,
    read_int8s,
    term_postings,
    top_chunks,
)


def test_read_int8s_reads_packed_big_endian_values() -> None:
    values = [3, -1, 2**40, 0, 2**63 - 1]
    assert read_int8s(struct.pack(">5q", *values)).tolist() == values
    assert read_int8s(None).size == 0  # string_agg over no rows
    assert read_int8s(b"").size == 0
    with pytest.raises(ValueError, match="whole int8"):
        read_int8s(b"\x00" * 12)


def test_okapi_parts_are_the_formula_per_posting() -> None:
    rng = random.Random(5)
    tf = [rng.randint(1, 40) for _ in range(500)] + [2**31 - 1]
    length = [rng.randint(1, 3000) for _ in range(500)] + [2**31 - 1]
    shapes = pack_shapes(np.array(tf), np.array(length))
    for k1, b, avgdl in [(1.2, 0.75, 118.3), (0.0, 0.0, 1.0), (2.0, 1.0, 7.5)]:
        parts = okapi_parts(shapes, avgdl, k1, b)
        # The scalar formula, evaluated in the order SQL evaluated it: equal to the last bit.
        expected = [
            t * (k1 + 1) / (t + k1 * (1 - b + b * n / avgdl))
            for t, n in zip(tf, length, strict=True)
        ]
        assert parts.tolist() == expected


def test_idf_is_lucenes() -> None:
    assert idf(1000, 10) == math.log(1 + (1000 - 10 + 0.5) / (10 + 0.5))
    assert idf(10, 10) > 0  # a term in every chunk still counts a little
    assert math.isfinite(idf(3, 5))  # df above N (a write between two reads): no error


def _row(ord_: int, df: int, chunks: list[int], tf: list[int], length: list[int]) -> dict:
    return {
        "ord": ord_,
        "n": 1000.0,
        "avgdl": 50.0,
        "df": df,
        "chunk_ids": struct.pack(f">{len(chunks)}q", *chunks) if chunks else None,
        "shapes": pack_shapes(np.array(tf), np.array(length)).astype(">i8").tobytes()
        if chunks
        else None,
    }


def test_term_postings_merges_parts_read_by_several_connections() -> None:
    whole = [[_row(1, 3, [5, 9, 70], [1, 2, 3], [10, 20, 30]), _row(2, 1, [9], [4], [20])]]
    # The same postings read as two ranges of chunk ids, rows in any order; in the second
    # range the filter kept none of term 2's postings although it has one there (df counts it).
    halves = [
        [_row(2, 1, [9], [4], [20]), _row(1, 2, [5, 9], [1, 2], [10, 20])],
        [_row(1, 1, [70], [3], [30]), _row(2, 0, [], [], [])],
    ]
    merged = term_postings(halves, 1.2, 0.75)
    expected = term_postings(whole, 1.2, 0.75)
    assert [t.idf for t in merged] == [t.idf for t in expected]
    assert [t.idf for t in merged] == [idf(1000.0, 3), idf(1000.0, 1)]
    assert [t.chunk_ids.tolist() for t in merged] == [[5, 9, 70], [9]]
    assert [t.tf_parts.tolist() for t in merged] == [t.tf_parts.tolist() for t in expected]
    assert term_postings([], 1.2, 0.75) == []


def _packed(row: dict, chunks: list[int], tf: list[int], length: list[int], **extra) -> dict:
    """A row with a term's packed blocks beside its rows (bm25_postings' other columns)."""
    return {
        **row,
        "packed_ids": struct.pack(f">{len(chunks)}q", *chunks),
        "packed_shapes": pack_shapes(np.array(tf), np.array(length)).astype(">i8").tobytes(),
        **extra,
    }


def _ids(values: list[int]) -> bytes:
    return struct.pack(f">{len(values)}q", *values)


def test_term_postings_reads_blocks_beside_rows() -> None:
    # Term 1: chunk 5 in a row, chunks 9, 40 and 70 in a block; 40 deleted since packed.
    rows = _row(1, 1, [5], [1], [10])
    packed = _packed(rows, [9, 40, 70], [2, 5, 3], [20, 50, 30], deleted=_ids([40, 1000]))
    (term,) = term_postings([[packed]], 1.2, 0.75)
    assert term.chunk_ids.tolist() == [5, 9, 70]
    assert term.idf == idf(1000.0, 3)  # the deleted chunk does not count towards df
    assert (
        term.tf_parts.tolist()
        == okapi_parts(
            pack_shapes(np.array([1, 2, 3]), np.array([10, 20, 30])), 50.0, 1.2, 0.75
        ).tolist()
    )
    # Under a filter that lets chunks 5 and 70 compete: df is the same, 9 no longer competes.
    allowed = {**packed, "allowed": _ids([5, 70])}
    (filtered,) = term_postings([[allowed]], 1.2, 0.75)
    assert filtered.idf == term.idf
    assert filtered.chunk_ids.tolist() == [5, 70]  # the row was filtered by SQL already


def test_the_first_rows_lists_apply_to_every_term_of_its_part() -> None:
    # The statement sends deleted and allowed once, on the first term's row; the second
    # term's block holds the deleted chunk 40 and chunk 9, which the filter leaves out.
    first = _packed(
        _row(1, 1, [5], [1], [10]), [70], [3], [30], deleted=_ids([40]), allowed=_ids([5, 70])
    )
    second = _packed(_row(2, 0, [], [], []), [9, 40, 70], [2, 5, 3], [20, 50, 30])
    second.update(deleted=None, allowed=None)
    one, two = term_postings([[first, second]], 1.2, 0.75)
    assert one.chunk_ids.tolist() == [5, 70]
    assert two.chunk_ids.tolist() == [70]
    assert two.idf == idf(1000.0, 2)  # 9 still counts towards df; the deleted 40 does not


def test_a_block_straddling_two_parts_is_counted_once() -> None:
    # Read by two connections, chunk ids 0-50 and 51-100; the block spans 9 to 70, so both
    # are sent it, and each keeps the postings within its own bounds.
    block = ([9, 40, 70], [2, 5, 3], [20, 50, 30])
    low = _packed(_row(1, 0, [], [], []), *block, first_chunk=0, last_chunk=50)
    high = _packed(_row(1, 1, [80], [1], [10]), *block, first_chunk=51, last_chunk=100)
    (term,) = term_postings([[low], [high]], 1.2, 0.75)
    assert sorted(term.chunk_ids.tolist()) == [9, 40, 70, 80]
    assert term.idf == idf(1000.0, 4)


def _reference(terms: list[TermPostings], limit: int) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for term in terms:
        for chunk, part in zip(term.chunk_ids.tolist(), term.tf_parts.tolist(), strict=True):
            scores[chunk] = scores.get(chunk, 0.0) + term.idf * part
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[: max(limit, 0)]


def test_top_chunks_matches_a_plain_sum_exactly_over_random_postings() -> None:
    rng = random.Random(11)
    dense = sparse = 0
    for _ in range(300):
        universe = rng.randint(1, 400)
        spread = rng.choice([1, 1, 50])  # ids packed together, or far apart (sorted instead)
        ids = range(10**6, 10**6 + universe * spread, spread)
        terms = []
        for _ in range(rng.randint(0, 12)):
            chunks = sorted(rng.sample(ids, rng.randint(0, universe)))
            if rng.random() < 0.3:
                rng.shuffle(chunks)  # the sum does not rely on chunk order
            # Coarse parts make equal scores common, so ties are exercised.
            parts = [rng.choice([0.5, 1.0, 1.5, rng.random()]) for _ in chunks]
            idf = rng.choice([1.0, 2.0, rng.random() * 5])
            terms.append(TermPostings(idf, np.array(chunks, np.int64), np.array(parts)))
        limit = rng.choice([0, 1, 5, 10, 100, 1000])
        postings = [c for t in terms for c in t.chunk_ids.tolist()]
        if postings:
            span = max(postings) - min(postings) + 1
            dense += span <= DENSE_SLOTS_PER_POSTING * len(postings)
            sparse += span > DENSE_SLOTS_PER_POSTING * len(postings)
        chunk_ids, scores = top_chunks(terms, limit)
        expected = _reference(terms, limit)
        # The same chunks, in the same order (ties to the lower id), with the same sums to
        # the last bit (each chunk's parts added in the order of the terms).
        assert list(zip(chunk_ids.tolist(), scores.tolist(), strict=True)) == expected
    assert dense > 50  # both ways of summing were checked
    assert sparse > 20


def test_top_chunks_of_nothing() -> None:
    empty = TermPostings(1.0, np.empty(0, np.int64), np.empty(0))
    assert top_chunks([], 10)[0].size == 0
    assert top_chunks([empty, empty], 10)[0].size == 0
