"""Building providers over scripted wire transports, and gateways over them."""

from __future__ import annotations

from typing import Any

from quarry.gateway.accounting import MemoryUsageSink, UsageLog, UsageRecord
from quarry.gateway.config import ModelConfig
from quarry.gateway.gateway import Gateway
from quarry.gateway.providers.anthropic import AnthropicProvider
from quarry.gateway.providers.openai import OpenAIProvider
from quarry.gateway.providers.openai_compatible import OpenAICompatibleProvider
from quarry.gateway.registry import Provider
from tests.gateway.wire import Script


def openai_model(script: Script, name: str = "gpt", **config: Any) -> OpenAIProvider:
    settings = {"model": "gpt-4o-mini", "max_retries": 2, "timeout": 5.0, **config}
    return OpenAIProvider(
        name,
        ModelConfig(provider="openai", **settings),
        {"OPENAI_API_KEY": "sk-test"},
        http_client=script.client(),
    )


def compatible_model(script: Script, name: str = "vllm", **config: Any) -> OpenAIProvider:
    settings = {
        "model": "served-model",
        "base_url": "http://vllm.test/v1",
        "max_retries": 1,
        "timeout": 5.0,
        **config,
    }
    return OpenAICompatibleProvider(
        name,
        ModelConfig(provider="openai_compatible", **settings),
        {},
        http_client=script.client(),
    )


def anthropic_model(script: Script, name: str = "claude", **config: Any) -> AnthropicProvider:
    settings = {"model": "claude-haiku-4-5", "max_retries": 2, "timeout": 5.0, **config}
    return AnthropicProvider(
        name,
        ModelConfig(provider="anthropic", **settings),
        {"ANTHROPIC_API_KEY": "sk-ant-test"},
        http_client=script.client(),
    )


def gateway(*providers: Provider, roles: dict[str, list[str]] | None = None, **kw: Any) -> Gateway:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("seed", 7)
    return Gateway(
        {p.name: p for p in providers},
        roles or {"generation": [p.name for p in providers]},
        usage=UsageLog(MemoryUsageSink()),
        **kw,
    )


async def records(gw: Gateway) -> list[UsageRecord]:
    await gw.flush()
    sink = gw.usage.sink
    assert isinstance(sink, MemoryUsageSink)
    return sink.records


USER = [{"role": "user", "content": "Say hello."}]
