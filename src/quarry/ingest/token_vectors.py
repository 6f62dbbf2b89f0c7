"""Token vectors kept for late interaction, small enough to store with every chunk.

The local model reads a chunk as a few hundred tokens, each a 384-wide vector before pooling.
Late interaction (``quarry.search.rerank.LateInteractionReranker``) compares a query's token
vectors with a passage's, token by token. Stored as the model leaves them they would weigh
about 150 KB per chunk in float16; here each token's vector is projected to ``DIMENSIONS``
dimensions by a fixed random orthogonal matrix, made unit length again and rounded to one
signed byte per dimension: about 13 KB for a chunk of 200 tokens. On SciFact the rerank ranks
about as well from these as from the full vectors (offline, train / test nDCG@10 0.7390 /
0.7445 against 0.7406 / 0.7493, bench/README.md): cosines between tokens survive a random
projection to 64 dimensions well enough for the best match of each query token to stay the
best.

The projection is random rather than fitted (PCA on a collection's own tokens was no better on
SciFact's train queries), so it is the same for every collection and needs nothing stored
beside it. It is made from fixed integers (a PCG64 stream's raw bits as signs, then
orthonormalised), not from a floating-point sampler whose stream a numpy release could change:
stored vectors and the query's must be projected alike. The stored form starts with a format
byte, so that a later change of form can tell old rows from new.

A query's token vectors take the same form (``LocalEmbedder.embed_query_with_tokens``), so
both sides of a comparison are rounded alike; they are never stored.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from quarry.ingest.embedders import Vectors

DIMENSIONS = 64
SEED = 20261204
FORMAT = 1  # the first byte of every stored value
_SCALE = 127.0


@cache
def projection(model_dimensions: int) -> npt.NDArray[np.float32]:
    """The fixed ``model_dimensions`` x ``DIMENSIONS`` matrix with orthonormal columns."""
    bits = np.random.PCG64(SEED).random_raw(model_dimensions * DIMENSIONS)
    signs = np.where(bits & 1, 1.0, -1.0).reshape(model_dimensions, DIMENSIONS)
    q, r = np.linalg.qr(signs)
    q *= np.sign(np.diag(r))  # the unique QR: R's diagonal positive
    return np.ascontiguousarray(q, dtype=np.float32)


def project(tokens: Vectors) -> Vectors:
    """Token vectors (one row each, the model's width) projected and made unit length.

    In torch, on the calling thread's own torch threads (one in an indexing lane): numpy's
    BLAS would start threads of its own, which spin beside the model's and took about a
    fifth more CPU than the encode itself in a lane (bench/README.md)."""
    import torch

    if len(tokens) == 0:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    rows = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))
    projected = torch.nn.functional.normalize(rows @ _projection_tensor(rows.shape[1]), dim=1)
    result: Vectors = projected.numpy()
    return result


def pack(tokens: Vectors) -> bytes:
    """The stored form of one text's token vectors: the format byte, then each token's
    projected vector as ``DIMENSIONS`` signed bytes."""
    rounded = np.clip(np.rint(project(tokens) * _SCALE), -127, 127).astype(np.int8)
    data: bytes = rounded.tobytes()
    return bytes([FORMAT]) + data


@cache
def _projection_tensor(model_dimensions: int) -> Any:
    import torch

    return torch.from_numpy(projection(model_dimensions))


def unpack(stored: bytes | memoryview | None) -> Vectors | None:
    """Stored token vectors as float32 rows of about unit length; None for a value that is
    missing or in a form this version does not read (its text is encoded again)."""
    if stored is None:
        return None
    raw = bytes(stored)
    if not raw or raw[0] != FORMAT or (len(raw) - 1) % DIMENSIONS:
        return None
    values = np.frombuffer(raw, dtype=np.int8, offset=1).reshape(-1, DIMENSIONS)
    result: Vectors = values.astype(np.float32) / _SCALE
    return result
