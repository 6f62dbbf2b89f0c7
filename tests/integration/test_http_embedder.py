"""The OpenAI-compatible embedder against a real HTTP server with scripted failures."""

import numpy as np
import pytest

from quarry.errors import TransientError
from quarry.ingest.http_embedder import EmbeddingRejected, OpenAICompatibleEmbedder
from quarry.retry import backoff_seconds, retry_after_seconds
from quarry.testing import HashEmbedder
from tests.embedding_server import Script, embedding_server


def embedder(url: str, **options) -> OpenAICompatibleEmbedder:
    defaults = {"max_tokens": 512, "tokenizer": None, "backoff_base": 0.01, "seed": 7}
    return OpenAICompatibleEmbedder(base_url=url, model="test-model", **{**defaults, **options})


async def test_batches_keep_order_and_vectors_match_the_model() -> None:
    script = Script()
    texts = [f"text number {i}" for i in range(10)]
    with embedding_server(script) as url:
        client = embedder(url, batch_size=4, concurrency=2)
        vectors = await client.embed(texts)
        await client.aclose()
    assert [n for _, n in script.seen] == [4, 4, 2]
    expected = await HashEmbedder(dimensions=16).embed(texts)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5)
    assert client.dimensions == 16


async def test_429_waits_for_retry_after_then_500_retries() -> None:
    script = Script(["429:0.4", "500"])
    with embedding_server(script) as url:
        client = embedder(url)
        vectors = await client.embed(["a", "b"])
        await client.aclose()
    assert vectors.shape == (2, 16)
    assert len(script.seen) == 3
    assert script.seen[1][0] - script.seen[0][0] >= 0.4  # honoured Retry-After


async def test_timeouts_and_malformed_answers_are_retried() -> None:
    """A NaN would fail the vector's write (pgvector refuses it) on every retry of the job."""
    script = Script(["slow:2", "malformed", "nan"])
    with embedding_server(script) as url:
        client = embedder(url, timeout=0.5)
        vectors = await client.embed(["a"])
        await client.aclose()
    assert vectors.shape == (1, 16)
    assert np.isfinite(vectors).all()
    assert len(script.seen) == 4


async def test_gives_up_with_a_transient_error_after_max_retries() -> None:
    script = Script(["500"] * 10)
    with embedding_server(script) as url:
        client = embedder(url, max_retries=2)
        with pytest.raises(TransientError, match="after 3 tries"):
            await client.embed(["a"])
        await client.aclose()
    assert len(script.seen) == 3


async def test_a_400_is_permanent() -> None:
    script = Script(["400"])
    with embedding_server(script) as url:
        client = embedder(url)
        with pytest.raises(EmbeddingRejected):
            await client.embed(["a"])
        await client.aclose()
    assert len(script.seen) == 1


async def test_unreachable_server_is_transient() -> None:
    from tests.support import free_port

    client = embedder(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with pytest.raises(TransientError, match="connection failed"):
        await client.embed(["a"])
    await client.aclose()


def test_retry_after_parsing_and_backoff_bounds() -> None:
    import random

    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds("100000") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    rng = random.Random(1)
    waits = [backoff_seconds(attempt, 0.5, 4.0, rng) for attempt in range(8)]
    assert all(0 <= w <= min(4.0, 0.5 * 2**a) for a, w in enumerate(waits))
