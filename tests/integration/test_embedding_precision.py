"""The local model in bfloat16: the same vectors as in float32, kept only where it is faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quarry.ingest.embedders import (
    SentenceTransformerModel,
    _cpu_lacks_native_bfloat16,
    lacks_native_bfloat16,
    prefer_bfloat16,
)
from quarry.ingest.factory import load_local_model
from quarry.settings import Settings

TEXTS = [
    "p53 and the cell cycle",
    "Tumour suppressor p53 halts the cell cycle after DNA damage, giving the cell time to "
    "repair its genome or, failing that, to undergo apoptosis. " * 6,
    "short",
    "x " * 400,  # cut at the model's input limit
    "",
]


def load(precision: str) -> SentenceTransformerModel:
    return load_local_model(
        Settings(data_dir=Path("/nonexistent"), local_embedding_precision=precision)
    )


def test_float32_runs_the_model_as_loaded(minilm_float32: SentenceTransformerModel) -> None:
    float32 = minilm_float32
    assert float32.precision == "float32"
    assert float32.calibration == {}  # nothing timed
    assert {p.dtype.itemsize for p in float32.model.parameters()} == {4}


def test_bfloat16_gives_the_float32_vectors(minilm_float32: SentenceTransformerModel) -> None:
    float32 = minilm_float32
    bf16 = load("bfloat16")
    assert bf16.precision == "bfloat16"
    assert bf16.model[0].auto_model.dtype.itemsize == 2  # the transformer's weights
    vectors, expected = bf16.encode(TEXTS), float32.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Measured: 0.99989 at worst (the empty text), 0.99995 typically.
    assert float(np.min(np.sum(vectors * expected, axis=1))) > 0.9995
    # One at a time or in a pass with others: the same vectors, as in float32.
    alone = np.vstack([bf16.encode([text]) for text in TEXTS])
    assert float(np.min(np.sum(alone * vectors, axis=1))) > 0.9995


def test_auto_times_both_and_says_what_it_chose(minilm: SentenceTransformerModel) -> None:
    calibration = minilm.calibration  # the session's model runs with the default, auto
    if _cpu_lacks_native_bfloat16():  # this CPU emulates bfloat16: nothing is timed
        assert calibration == {"native_bfloat16": 0.0}
        assert minilm.precision == "float32"
        return
    assert set(calibration) == {"float32_ms", "bfloat16_ms", "agreement"}
    assert calibration["agreement"] > 0.9999
    chosen = prefer_bfloat16(
        calibration["float32_ms"], calibration["bfloat16_ms"], calibration["agreement"]
    )
    assert minilm.precision == ("bfloat16" if chosen else "float32")


@pytest.mark.parametrize(
    ("machine", "avx512_bf16", "amx", "lacks"),
    [
        ("x86_64", False, False, True),  # AVX2 only (the AMD EPYC measured): emulated
        ("AMD64", False, False, True),
        ("x86_64", True, False, False),  # AVX-512 BF16: time it
        ("x86_64", False, True, False),  # AMX: time it
        ("aarch64", False, False, False),  # another architecture: only timing tells
    ],
)
def test_auto_skips_the_timing_only_where_bfloat16_is_surely_emulated(
    machine: str, avx512_bf16: bool, amx: bool, lacks: bool
) -> None:
    assert lacks_native_bfloat16(machine, avx512_bf16, amx) is lacks


@pytest.mark.parametrize(
    ("float32_s", "bfloat16_s", "agreement", "chosen"),
    [
        (1.0, 0.6, 0.99995, True),
        (1.0, 0.8, 0.999, True),  # both at their bound
        (1.0, 0.81, 0.99995, False),  # not enough faster
        (1.0, 1.9, 0.99995, False),  # emulated: slower
        (1.0, 0.5, 0.998, False),  # faster but not the same vectors
    ],
)
def test_auto_keeps_bfloat16_only_when_faster_and_agreeing(
    float32_s: float, bfloat16_s: float, agreement: float, chosen: bool
) -> None:
    assert prefer_bfloat16(float32_s, bfloat16_s, agreement) is chosen
