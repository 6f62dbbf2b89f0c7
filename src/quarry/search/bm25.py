"""BM25's last step: each chunk's score summed over the query's terms, and the best chunks.

Postgres computes BM25's parts (the bm25_postings query in db/queries/search.sql): each query
term's idf and, per posting, the saturated and length-normalised term frequency. What is left
is a sum per chunk over the terms it contains, then the top k. Postgres can do that too, with
one aggregate row per posting, but for a query of common terms that was half of the
statement's time (about 1 µs per posting); here it is a stable sort of the postings' chunk
ids and one pass of additions (about 0.03 µs per posting). bench/README.md has the figures.

Each chunk's weights are added in the order of the query's terms, as Postgres' aggregate
added them, and ties go to the lower chunk id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# The binary form of a one-dimensional array without nulls (Postgres' array_send): number of
# dimensions, a has-nulls flag and the element type, then per dimension its length and lower
# bound, then every element as its length in bytes and its value, all big-endian.
_HEADER = np.dtype([("ndim", ">i4"), ("flags", ">i4"), ("oid", ">i4")])
_DIMENSION = 8


def read_array(data: bytes | None, dtype: str) -> npt.NDArray[Any]:
    """A Postgres ``int8[]`` or ``float8[]`` sent by array_send, as a numpy array (NULL, the
    aggregate of no rows, and an empty array read as empty)."""
    kind = np.dtype(dtype)
    if data is None:
        return np.empty(0, kind)
    if len(data) < _HEADER.itemsize:
        raise ValueError("not an array: too short")
    header = np.frombuffer(data, _HEADER, count=1)[0]
    if header["ndim"] == 0:
        return np.empty(0, kind)
    if header["ndim"] != 1 or header["flags"] != 0:
        raise ValueError("expected a one-dimensional array without nulls")
    length = int(np.frombuffer(data, ">i4", count=1, offset=_HEADER.itemsize)[0])
    element = np.dtype([("length", ">i4"), ("value", kind.newbyteorder(">"))])
    body = len(data) - _HEADER.itemsize - _DIMENSION
    if body != length * element.itemsize:
        raise ValueError(f"expected {length} elements of {kind.itemsize} bytes")
    values = np.frombuffer(data, element, offset=_HEADER.itemsize + _DIMENSION)
    if not (values["length"] == kind.itemsize).all():
        raise ValueError(f"expected {length} elements of {kind.itemsize} bytes")
    return values["value"].astype(kind)


@dataclass(frozen=True)
class TermPostings:
    """One query term's share of BM25: its idf, and for each chunk that contains it (in any
    order) the saturated, length-normalised frequency of the term there."""

    idf: float
    chunk_ids: npt.NDArray[np.int64]
    tf_parts: npt.NDArray[np.float64]


def top_chunks(
    terms: list[TermPostings], limit: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The ``limit`` best chunks and their scores, best first, ties to the lower chunk id."""
    present = [t for t in terms if t.chunk_ids.size]
    if not present or limit <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    chunk_ids = np.concatenate([t.chunk_ids for t in present])
    weights = np.concatenate([t.idf * t.tf_parts for t in present])
    # Stable, so each chunk's weights stay in the order of the query's terms (the order
    # Postgres summed them in); concatenated sorted lists are runs that the sort merges.
    order = np.argsort(chunk_ids, kind="stable")
    chunk_ids, weights = chunk_ids[order], weights[order]
    first = np.concatenate(([True], chunk_ids[1:] != chunk_ids[:-1]))
    chunks = chunk_ids[first]
    # bincount adds in input order, one weight after another (np.add.reduceat would add
    # pairwise within long runs, a different rounding).
    scores = np.bincount(np.cumsum(first) - 1, weights=weights).astype(np.float64, copy=False)
    if limit < scores.size:
        keep = np.argpartition(-scores, limit - 1)[:limit]
        # Scores equal to the limit-th may sit on either side of the partition: take them all
        # and let the final order decide by chunk id.
        threshold = scores[keep].min()
        keep = np.flatnonzero(scores >= threshold)
        chunks, scores = chunks[keep], scores[keep]
    best = np.lexsort((chunks, -scores))[:limit]
    return chunks[best], scores[best]
