"""Token vectors kept for late interaction, small enough to store with every chunk.

The local model reads a chunk as a few hundred tokens, each a 384-wide vector before pooling.
Late interaction (``quarry.search.rerank.LateInteractionReranker``) compares a query's token
vectors with a passage's, token by token. Stored as the model leaves them they would weigh
about 150 KB per chunk in float16; here each token's vector is projected to ``DIMENSIONS``
dimensions by a fixed random orthogonal matrix, made unit length again and rounded to four
bits per dimension (a fixed step of 1/14: a unit vector's 64 components rarely pass 0.5), and
a passage's punctuation tokens are left out: about 5.6 KB for a chunk of 200 tokens. On
SciFact the rerank ranks as well from these as from a byte per dimension with every token
(offline, train / test nDCG@10 0.7404 / 0.7432 against 0.7385 / 0.7437, at 44% of the
bytes; bench/README.md), and about as well as from the full vectors (0.7406 / 0.7493):
cosines between tokens survive a random projection to 64 dimensions well enough for the best
match of each query token to stay the best, and a comma in a passage is nobody's best match.

The projection is random rather than fitted (PCA on a collection's own tokens was no better on
SciFact's train queries), so it is the same for every collection and needs nothing stored
beside it. It is made from fixed integers (a PCG64 stream's raw bits as signs, then
orthonormalised), not from a floating-point sampler whose stream a numpy release could change:
stored vectors and the query's must be projected alike. The stored form starts with a format
byte, so that a later change of form can tell old rows from new (format 1, a byte per
dimension with every token, reads as missing: such a chunk is encoded again at search time
until it is stored anew, by the re-embed a worker queues as it starts or by ``quarry
reindex``).

A query's token vectors take the same form (``LocalEmbedder.embed_query_with_tokens``), every
token kept, so both sides of a comparison are rounded alike; they are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from quarry.ingest.embedders import Vectors

DIMENSIONS = 64
BYTES_PER_TOKEN = DIMENSIONS // 2  # four bits per dimension
SEED = 20261204
FORMAT = 2  # the first byte of every stored value
_STEP = 0.5 / 7  # a level of the rounding: -7..7 steps cover -0.5..0.5


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
    projected vector as ``DIMENSIONS`` signed four-bit levels, two to a byte (the even
    dimension in the low half)."""
    levels = np.clip(np.rint(project(tokens) / _STEP), -7, 7).astype(np.int8)
    nibbles = (levels & 0x0F).astype(np.uint8).reshape(len(levels), BYTES_PER_TOKEN, 2)
    data: bytes = (nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)).tobytes()
    return bytes([FORMAT]) + data


def punctuation(vocabulary: Mapping[str, int]) -> npt.NDArray[np.bool_]:
    """Which of a tokenizer's token ids are punctuation alone (no letter or digit, a
    word piece's ``##`` aside): a passage's are not stored (``pack`` is given the rest)."""
    table = np.zeros(max(vocabulary.values(), default=-1) + 1, dtype=bool)
    for token, token_id in vocabulary.items():
        bare = token.removeprefix("##")
        table[token_id] = bool(bare) and not any(ch.isalnum() for ch in bare)
    return table


@cache
def _projection_tensor(model_dimensions: int) -> Any:
    import torch

    return torch.from_numpy(projection(model_dimensions))


def is_current(stored: bytes | memoryview | None) -> bool:
    """Whether a stored value is in this version's form (a value of an older form is
    replaced by reindexing, as a missing one is)."""
    if stored is None or len(stored) == 0:
        return False
    return stored[0] == FORMAT and (len(stored) - 1) % BYTES_PER_TOKEN == 0


def unpack(stored: bytes | memoryview | None) -> Vectors | None:
    """Stored token vectors as float32 rows of about unit length; None for a value that is
    missing or in a form this version does not read (its text is encoded again)."""
    if stored is None:
        return None
    raw = bytes(stored)
    if not is_current(raw):
        return None
    packed = np.frombuffer(raw, dtype=np.uint8, offset=1).reshape(-1, BYTES_PER_TOKEN)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=2).reshape(len(packed), DIMENSIONS)
    levels = (nibbles.astype(np.int8) ^ 8) - 8  # four-bit two's complement, sign extended
    result: Vectors = levels.astype(np.float32) * np.float32(_STEP)
    return result
