"""Search queries through ONNX Runtime: the model's own vectors, alone or in a padded batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quarry.ingest.embedders import LocalEmbedder, SentenceTransformerModel
from quarry.ingest.factory import load_local_model
from quarry.settings import Settings

QUERIES = [
    "p53 and the cell cycle",
    "Does vitamin D supplementation lower the risk of fractures in adults over sixty-five?",
    "short",
    "x " * 400,  # cut at the model's input limit
    "",
    "Tumour suppressor p53 halts the cell cycle after DNA damage. " * 3,
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_onnx_queries_are_the_models_vectors(minilm_float32: SentenceTransformerModel) -> None:
    model = minilm_float32
    assert model.query_runtime == "onnx"  # the default, auto, exported it
    expected = model.encode(QUERIES)  # PyTorch, through sentence-transformers
    batch = model.encode_queries(QUERIES)  # one padded batch of mixed lengths
    alone = np.vstack([model.encode_queries([q]) for q in QUERIES])
    assert batch.dtype == np.float32
    assert batch.shape == expected.shape
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # Measured: 1.0 to six places. A lost attention mask (padding attended to) or a
    # sequence length traced as a constant would fall far below.
    assert float(np.min(cosines(batch, expected))) > 0.99999
    assert float(np.min(cosines(alone, expected))) > 0.99999
    assert np.allclose(batch, alone, atol=1e-5)


def test_torch_keeps_queries_on_pytorch(minilm_float32: SentenceTransformerModel) -> None:
    model = load_local_model(
        Settings(
            data_dir=Path("/nonexistent"),
            local_embedding_precision="float32",
            local_query_runtime="torch",
        )
    )
    assert model.query_runtime == "torch"
    vectors = model.encode_queries(QUERIES[:3])
    assert np.array_equal(vectors, model.encode(QUERIES[:3]))
    assert float(np.min(cosines(vectors, minilm_float32.encode_queries(QUERIES[:3])))) > 0.99999


async def test_the_query_lane_runs_the_query_runtime(
    minilm_float32: SentenceTransformerModel,
) -> None:
    embedder = LocalEmbedder(minilm_float32)
    try:
        vector = await embedder.embed_query(QUERIES[1])
    finally:
        await embedder.aclose()
    assert np.array_equal(vector, minilm_float32.encode_queries([QUERIES[1]])[0])
