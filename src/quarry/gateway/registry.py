"""The provider registry: one module per provider under ``quarry.gateway.providers``.

A provider is the module of its name (``providers/openai.py`` is the provider ``openai``), and
the module registers its factory with ``@register("openai")``. Adding a provider is adding one
file. Modules are imported when a configured model first names them, so a process pays for
the SDKs it uses (the Anthropic SDK alone takes about a second to import). The ``Provider``
protocol is the whole contract; ``tests/gateway/test_contract.py`` is the suite every provider
passes.
"""

from __future__ import annotations

import importlib
import math
import os
import pkgutil
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Protocol

from tokenizers import Tokenizer

from quarry.gateway.config import ModelConfig
from quarry.gateway.types import Embeddings, Message, ProviderError, Reply, Request, StreamUsage
from quarry.retry import retry_after_seconds


class ProviderConfigError(Exception):
    """A model's configuration cannot work (a missing API key, a missing file); the message
    names the setting or environment variable to fix. Raised when the gateway is built."""


class Provider(Protocol):
    name: str  # the configured model name
    config: ModelConfig
    provider_model: str  # the id the provider knows the model by

    async def generate(self, request: Request) -> Reply: ...

    def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        """Text deltas, then at most one StreamUsage. Raises ProviderError on failure."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...

    def count_tokens(self, text: str | Sequence[Message]) -> int: ...

    async def context_window(self) -> int | None:
        """Tokens the model holds, None where unknown. A model loaded on first use (a local
        GGUF) loads here, so the gateway's ``ready`` calls it before counting tokens."""
        ...

    async def probe(self) -> str | None:
        """None when the model can be reached, else why not (short, for `quarry models`)."""
        ...

    async def aclose(self) -> None: ...


Factory = Callable[[str, ModelConfig, Mapping[str, str]], Provider]
_FACTORIES: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise RuntimeError(f"provider {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return add


def names() -> list[str]:
    """Every provider there is, without importing any."""
    from quarry.gateway import providers

    return sorted(m.name for m in pkgutil.iter_modules(providers.__path__))


def factory(provider: str) -> Factory | None:
    """The provider's factory, importing its module on first use; None if there is none."""
    if provider not in names():
        return None
    if provider not in _FACTORIES:
        importlib.import_module(f"quarry.gateway.providers.{provider}")
    found = _FACTORIES.get(provider)
    if found is None:
        raise RuntimeError(f"quarry.gateway.providers.{provider} registers no provider of its name")
    return found


def build(name: str, config: ModelConfig, env: Mapping[str, str] | None = None) -> Provider:
    make = factory(config.provider)
    if make is None:
        known = ", ".join(names())
        raise ProviderConfigError(
            f"model {name!r}: unknown provider {config.provider!r} (known: {known})"
        )
    return make(name, config, os.environ if env is None else env)


def api_key(name: str, config: ModelConfig, env: Mapping[str, str], default_env: str | None) -> str:
    """The key a model's provider needs, or a ProviderConfigError naming the variable."""
    variable = config.api_key_env or default_env
    if variable is None:
        return ""
    value = env.get(variable, "").strip()
    if not value:
        raise ProviderConfigError(
            f"model {name!r} (provider {config.provider}) needs an API key: set the "
            f"environment variable {variable}"
            + ("" if config.api_key_env else ", or name another with api_key_env")
        )
    return value


RETRY_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx (Anthropic's 529: overloaded)
MODEL_STATUSES = frozenset({401, 403, 404})  # a bad key or an unknown model: the model is unusable
# Error codes that no wait mends, whatever their status: OpenAI answers a spent quota (billing)
# with 429.
LASTING_CODES = frozenset({"insufficient_quota"})


def status_error(
    status: int, message: str, retry_after: str | None, *, code: str | None = None
) -> ProviderError:
    """An HTTP error answer as a ProviderError: 408, 409, 425, 429 and 5xx are retried (after
    Retry-After when given), unless the provider's error ``code`` says no wait will help. A
    status under 400 comes from an error event inside a stream that began with 200 (an
    overload, say): the connection was fine, the model was not, so it too may pass."""
    lasting = code in LASTING_CODES
    retryable = not lasting and (status in RETRY_STATUSES or status >= 500 or status < 400)
    return ProviderError(
        f"HTTP {status}: {message}",
        retryable=retryable,
        retry_after=retry_after_seconds(retry_after),
        blames_model=retryable or lasting or status in MODEL_STATUSES,
    )


# Without the model's own tokenizer, a token is about four bytes of English text, and a chat
# message costs a few tokens of framing (OpenAI documents 3 to 4).
BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


class TokenCounter:
    """Counts tokens with a tokenizer.json when one is configured, else estimates."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self._tokenizer = Tokenizer.from_file(str(path)) if path else None
        if self._tokenizer is not None:
            # Tokenizer files often ship with truncation on (MiniLM's cuts at 128), which
            # would cap every count; padding would inflate them.
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()

    def __call__(self, text: str | Sequence[Message]) -> int:
        if isinstance(text, str):
            return self._text(text)
        return sum(self._text(m.content) + TOKENS_PER_MESSAGE for m in text) + 2

    def _text(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)
