"""BM25's last steps, in the service: each term's weights, each chunk's sum, the best chunks.

Postgres reads each query term's posting list (the bm25_postings query in
db/queries/search.sql) with the project's totals, and sends each list as two packed binary
strings: the chunk ids, and each posting's term frequency with its chunk's length. Here they
become Okapi BM25's parts (``term_postings``), then a sum per chunk over the terms it contains
and the top k (``top_chunks``). Postgres can do all of that, with one aggregate row per
posting and the formula evaluated per posting by its executor, but for a query of common
terms those were most of the statement's time; here the formula is one vector operation over
a term's list, and the sum one pass of additions into a table indexed by chunk id (or, for
ids spread far apart, after a stable sort): a few hundredths of a µs per posting.
bench/README.md has the figures.

Each chunk's weights are added in the order of the query's terms, and ties go to the lower
chunk id, as Postgres' aggregate did; the arithmetic is the same IEEE operations in the same
order, so the scores are the SQL formula's to the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# A posting's shape: its chunk's length in terms in the high 32 bits, the term's frequency in
# the chunk in the low 32 (both positive int4 in chunk_terms, so the pair fits an int8).
_TF_BITS = 32
_TF_MASK = (1 << _TF_BITS) - 1


def read_int8s(data: bytes | None) -> npt.NDArray[np.int64]:
    """Big-endian int8 values packed end to end (string_agg of int8send); NULL, the aggregate
    of no rows, reads as empty."""
    if data is None:
        return np.empty(0, np.int64)
    if len(data) % 8:
        raise ValueError(f"expected whole int8 values, got {len(data)} bytes")
    return np.frombuffer(data, ">i8").astype(np.int64)


def idf(chunks: float, df: float) -> float:
    """Lucene's idf, log(1 + (N - df + 0.5) / (df + 0.5)), positive while df <= N (df and N
    read by two connections a moment apart may disagree slightly; the log stays defined)."""
    return math.log(1 + (chunks - df + 0.5) / (df + 0.5))


def okapi_parts(
    shapes: npt.NDArray[np.int64], avgdl: float, k1: float, b: float
) -> npt.NDArray[np.float64]:
    """Each posting's saturated, length-normalised term frequency,
    tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl)), from its packed shape."""
    tf = (shapes & _TF_MASK).astype(np.float64)
    length = (shapes >> _TF_BITS).astype(np.float64)
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))


def pack_shapes(tf: npt.NDArray[np.int64], length: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """What the bm25_postings query packs per posting (for tests and tools)."""
    return (length.astype(np.int64) << _TF_BITS) | tf.astype(np.int64)


@dataclass(frozen=True)
class TermPostings:
    """One query term's share of BM25: its idf, and for each chunk that contains it (in any
    order) the saturated, length-normalised frequency of the term there."""

    idf: float
    chunk_ids: npt.NDArray[np.int64]
    tf_parts: npt.NDArray[np.float64]


def term_postings(parts: list[list[dict[str, Any]]], k1: float, b: float) -> list[TermPostings]:
    """The query's terms, in its order, from the rows of one or more bm25_postings calls
    over disjoint ranges of chunk ids: each term's postings from chunk_terms and from its
    packed blocks (those within the part's range, less the chunks deleted since they were
    packed and, under a filter, the chunks it leaves out), concatenated; its df summed over
    the parts; its idf and parts computed with the project's N and average length."""
    # Each row with its part's lists of deleted and allowed chunks, which only the part's
    # first row (the query's first term) carries; None where the column is NULL.
    by_term: dict[int, list[tuple[dict[str, Any], _Ids, _Ids]]] = {}
    for rows in parts:
        if not rows:
            continue
        deleted, allowed = (_ids_or_none(rows[0].get(column)) for column in ("deleted", "allowed"))
        for row in rows:
            by_term.setdefault(row["ord"], []).append((row, deleted, allowed))
    terms = []
    for _, term_rows in sorted(by_term.items()):
        chunks, avgdl = float(term_rows[0][0]["n"]), float(term_rows[0][0]["avgdl"])
        df = 0
        chunk_ids: list[npt.NDArray[np.int64]] = []
        shapes: list[npt.NDArray[np.int64]] = []
        for row, deleted, allowed in term_rows:
            df += int(row["df"])
            chunk_ids.append(read_int8s(row["chunk_ids"]))
            shapes.append(read_int8s(row["shapes"]))
            packed_ids = read_int8s(row.get("packed_ids"))
            if not packed_ids.size:
                continue
            packed_shapes = read_int8s(row["packed_shapes"])
            first, last = row.get("first_chunk"), row.get("last_chunk")
            if first is not None and last is not None:
                # A block that straddles the part's bounds is sent to both parts.
                inside = (packed_ids >= first) & (packed_ids <= last)
                if not inside.all():
                    packed_ids, packed_shapes = packed_ids[inside], packed_shapes[inside]
            if deleted is not None and deleted.size:
                live = ~np.isin(packed_ids, deleted)
                packed_ids, packed_shapes = packed_ids[live], packed_shapes[live]
            df += packed_ids.size  # whatever a filter keeps, as for chunk_terms' rows
            if allowed is not None:
                competes = np.isin(packed_ids, allowed)
                packed_ids, packed_shapes = packed_ids[competes], packed_shapes[competes]
            chunk_ids.append(packed_ids)
            shapes.append(packed_shapes)
        terms.append(
            TermPostings(
                idf=idf(chunks, float(df)),
                chunk_ids=np.concatenate(chunk_ids),
                tf_parts=okapi_parts(np.concatenate(shapes), avgdl, k1, b),
            )
        )
    return terms


_Ids = npt.NDArray[np.int64] | None


def _ids_or_none(data: bytes | None) -> _Ids:
    return None if data is None else read_int8s(data)


def top_chunks(
    terms: list[TermPostings], limit: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The ``limit`` best chunks and their scores, best first, ties to the lower chunk id."""
    present = [t for t in terms if t.chunk_ids.size]
    if not present or limit <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    chunk_ids = np.concatenate([t.chunk_ids for t in present])
    weights = np.concatenate([t.idf * t.tf_parts for t in present])
    chunks, scores = _sum_per_chunk(chunk_ids, weights)
    if limit < scores.size:
        keep = np.argpartition(-scores, limit - 1)[:limit]
        # Scores equal to the limit-th may sit on either side of the partition: take them all
        # and let the final order decide by chunk id.
        threshold = scores[keep].min()
        keep = np.flatnonzero(scores >= threshold)
        chunks, scores = chunks[keep], scores[keep]
    best = np.lexsort((chunks, -scores))[:limit]
    return chunks[best], scores[best]


# Up to this many slots per posting, a chunk's slot is its id's offset from the lowest (a dense
# table; no sort). Sparser ids (a small project among many in one table) are sorted instead.
DENSE_SLOTS_PER_POSTING = 4


def _sum_per_chunk(
    chunk_ids: npt.NDArray[np.int64], weights: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each chunk once, in id order, with the sum of its weights added in the order given
    (the query's terms': bincount adds in input order, one weight after another, as Postgres'
    aggregate did; np.add.reduceat would add pairwise within long runs, a different rounding).
    """
    lowest = int(chunk_ids.min())
    span = int(chunk_ids.max()) - lowest + 1
    if span <= DENSE_SLOTS_PER_POSTING * chunk_ids.size:
        offsets = chunk_ids - lowest
        sums = np.bincount(offsets, weights=weights, minlength=span)
        seen = np.zeros(span, dtype=bool)
        seen[offsets] = True
        slots = np.flatnonzero(seen)
        return slots + lowest, sums[slots].astype(np.float64, copy=False)
    # Stable, so each chunk's weights stay in the order of the query's terms; concatenated
    # sorted lists are runs that the sort merges.
    order = np.argsort(chunk_ids, kind="stable")
    chunk_ids, weights = chunk_ids[order], weights[order]
    first = np.concatenate(([True], chunk_ids[1:] != chunk_ids[:-1]))
    totals = np.bincount(np.cumsum(first) - 1, weights=weights).astype(np.float64, copy=False)
    return chunk_ids[first], totals
