"""The stored form of token vectors for late interaction: a fixed projection, a byte per
dimension, and a format byte that lets a later form tell old values from new."""

from __future__ import annotations

import numpy as np
import pytest

from quarry.ingest.token_vectors import DIMENSIONS, FORMAT, pack, project, projection, unpack
from quarry.search.rerank import maxsim


def unit_rows(rows: int, width: int = 384, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def test_the_projection_is_orthonormal_and_fixed() -> None:
    matrix = projection(384)
    assert matrix.shape == (384, DIMENSIONS)
    assert np.allclose(matrix.T @ matrix, np.eye(DIMENSIONS), atol=1e-5)
    # Stored values and queries must be projected alike in every release: the matrix comes
    # from integers (PCG64's raw bits) and an orthonormalisation made unique, so its entries
    # are these wherever numpy and LAPACK come from.
    assert matrix[0, :4].tolist() == pytest.approx(
        [-0.05103104, -0.05050220, -0.05319475, 0.05055045], abs=1e-6
    )
    assert projection(768).shape == (768, DIMENSIONS)  # any model width


def test_packed_vectors_keep_their_cosines_and_their_token_count() -> None:
    tokens = unit_rows(37)
    stored = pack(tokens)
    assert stored[0] == FORMAT
    assert len(stored) == 1 + 37 * DIMENSIONS  # a byte per dimension per token
    restored = unpack(stored)
    assert restored is not None
    assert restored.shape == (37, DIMENSIONS)
    exact = project(tokens)
    assert np.allclose(np.linalg.norm(exact, axis=1), 1.0, atol=1e-5)
    # Rounding to a byte moves each cosine (and length) by about a hundredth at most.
    assert np.abs(restored @ restored.T - exact @ exact.T).max() < 0.02


def test_late_interaction_ranks_alike_from_the_stored_form() -> None:
    query = unit_rows(12, seed=1)
    related = unit_rows(40, seed=2)
    related[:12] = query + 0.3 * unit_rows(12, seed=3)  # the query's tokens, perturbed
    related /= np.linalg.norm(related, axis=1, keepdims=True)
    unrelated = unit_rows(40, seed=4)
    projected_query = project(query)
    near = maxsim(projected_query, unpack(pack(related)))  # type: ignore[arg-type]
    far = maxsim(projected_query, unpack(pack(unrelated)))  # type: ignore[arg-type]
    assert near > far + 0.3
    assert near == pytest.approx(maxsim(projected_query, project(related)), abs=0.01)


@pytest.mark.parametrize(
    "stored",
    [None, b"", bytes([FORMAT + 1]) + bytes(DIMENSIONS), bytes([FORMAT]) + bytes(DIMENSIONS - 1)],
    ids=["missing", "empty", "unknown-format", "truncated"],
)
def test_values_this_version_cannot_read_are_missing(stored: bytes | None) -> None:
    assert unpack(stored) is None


def test_a_text_without_tokens_packs_to_the_format_byte_alone() -> None:
    stored = pack(np.zeros((0, 384), dtype=np.float32))
    assert stored == bytes([FORMAT])
    restored = unpack(stored)
    assert restored is not None
    assert restored.shape == (0, DIMENSIONS)
