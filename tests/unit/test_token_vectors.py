"""The stored form of token vectors for late interaction: a fixed projection, four bits per
dimension, and a format byte that lets a later form tell old values from new."""

from __future__ import annotations

import numpy as np
import pytest

from quarry.ingest.token_vectors import (
    BYTES_PER_TOKEN,
    DIMENSIONS,
    FORMAT,
    is_current,
    pack,
    project,
    projection,
    punctuation,
    unpack,
)
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
    assert is_current(stored)
    assert len(stored) == 1 + 37 * BYTES_PER_TOKEN  # four bits per dimension per token
    restored = unpack(stored)
    assert restored is not None
    assert restored.shape == (37, DIMENSIONS)
    exact = project(tokens)
    assert np.allclose(np.linalg.norm(exact, axis=1), 1.0, atol=1e-5)
    # Each dimension is the nearest of 15 levels 1/14 apart (within -0.5..0.5)...
    step = 0.5 / 7
    assert np.abs(restored - np.clip(exact, -0.5, 0.5)).max() <= step / 2 + 1e-6
    # ...which moves a cosine by about 0.02 on average and about a tenth at most.
    error = np.abs(restored @ restored.T - exact @ exact.T)
    assert error.mean() < 0.04
    assert error.max() < 0.15


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
    assert near == pytest.approx(maxsim(projected_query, project(related)), abs=0.03)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        b"",
        bytes([FORMAT + 1]) + bytes(BYTES_PER_TOKEN),
        bytes([1]) + bytes(DIMENSIONS),  # the first form: a byte per dimension
        bytes([FORMAT]) + bytes(BYTES_PER_TOKEN - 1),
    ],
    ids=["missing", "empty", "unknown-format", "older-format", "truncated"],
)
def test_values_this_version_cannot_read_are_missing(stored: bytes | None) -> None:
    assert unpack(stored) is None
    assert not is_current(stored)


def test_every_level_survives_the_packing() -> None:
    # Random tokens, and tokens along the projection's own axes (one dimension at +-1, so
    # rounded to the extreme levels): each dimension's level, -7 to 7, comes back exactly.
    axes = projection(384).T[:8]
    tokens = np.vstack([unit_rows(200), axes, -axes])
    step = 0.5 / 7
    levels = np.clip(np.rint(project(tokens) / step), -7, 7)
    assert set(np.unique(levels)) == set(range(-7, 8))
    restored = unpack(pack(tokens))
    assert restored is not None
    assert np.array_equal(np.rint(restored / step), levels)


def test_punctuation_is_the_tokens_without_a_letter_or_digit() -> None:
    vocabulary = {"[CLS]": 0, ",": 1, "the": 2, "##.": 3, "##s": 4, "(": 5, "2": 6, "\u03b1": 7}
    table = punctuation(vocabulary)
    assert table.tolist() == [False, True, False, True, False, True, False, False]


def test_a_text_without_tokens_packs_to_the_format_byte_alone() -> None:
    stored = pack(np.zeros((0, 384), dtype=np.float32))
    assert stored == bytes([FORMAT])
    restored = unpack(stored)
    assert restored is not None
    assert restored.shape == (0, DIMENSIONS)
