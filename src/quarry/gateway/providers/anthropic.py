"""Anthropic through the official SDK: messages, streaming, and structured output through a
tool whose input schema is the requested schema (the model is made to call it, and the call's
input is the answer).

System messages travel in Anthropic's separate ``system`` field. The SDK's own retries are off:
the gateway retries. The current Messages API (SDK 2.x) takes no sampling temperature, so a
role's temperature is not sent to Anthropic models.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anthropic
import httpx2

from quarry.gateway.config import ModelConfig
from quarry.gateway.registry import Provider, TokenCounter, api_key, register, status_error
from quarry.gateway.types import (
    Embeddings,
    Message,
    ProviderError,
    Reply,
    Request,
    StreamUsage,
    Unsupported,
)

# Anthropic's stop reasons in the gateway's (OpenAI's) words, so a caller reads one
# vocabulary whichever provider answered: "length" is an answer cut at max_tokens.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return _FINISH_REASONS.get(stop_reason, stop_reason)


class AnthropicProvider:
    def __init__(
        self,
        name: str,
        config: ModelConfig,
        env: Mapping[str, str],
        *,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.provider_model = config.model or name
        self._count = TokenCounter(config.tokenizer)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key(name, config, env, "ANTHROPIC_API_KEY"),
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout,
            http_client=http_client,
        )

    def _params(self, request: Request) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": self.provider_model,
            "max_tokens": request.max_tokens,
            "messages": [m.as_dict() for m in request.messages if m.role != "system"],
            "timeout": request.timeout,
        }
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.schema is not None:
            params["tools"] = [
                {
                    "name": request.schema_name,
                    "description": "Give the answer as this tool's input.",
                    "input_schema": request.schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": request.schema_name}
        return params

    async def generate(self, request: Request) -> Reply:
        try:
            response = await self._client.messages.create(**self._params(request))
        except anthropic.APIError as exc:
            raise provider_error(exc) from exc
        parts: list[str] = []
        for block in response.content:
            if block.type == "tool_use" and request.schema is not None:
                parts = [json.dumps(block.input)]
                break
            if block.type == "text":
                parts.append(block.text)
        return Reply(
            text="".join(parts),
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            finish_reason=finish_reason(response.stop_reason),
        )

    async def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        input_tokens: int | None = None
        output_tokens: int | None = None
        finish: str | None = None
        stopped = False
        try:
            events = await self._client.messages.create(**self._params(request), stream=True)
            async with events:
                async for event in events:
                    if event.type == "message_start":
                        input_tokens = event.message.usage.input_tokens
                    elif event.type == "content_block_delta":
                        if event.delta.type == "text_delta" and event.delta.text:
                            yield event.delta.text
                        elif event.delta.type == "input_json_delta" and event.delta.partial_json:
                            yield event.delta.partial_json
                    elif event.type == "message_delta":
                        output_tokens = event.usage.output_tokens
                        finish = finish_reason(event.delta.stop_reason) or finish
                    elif event.type == "message_stop":
                        stopped = True
        except anthropic.APIError as exc:
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:  # the connection dropped mid-stream
            raise ProviderError(f"the stream broke off: {exc}", retryable=True) from exc
        if not stopped:
            raise ProviderError("the stream ended before message_stop", retryable=True)
        yield StreamUsage(input_tokens, output_tokens, finish)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        raise Unsupported("Anthropic has no embeddings API; give the embedding role another model")

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        return self._count(text)

    async def context_window(self) -> int | None:
        return self.config.context_window

    async def probe(self) -> str | None:
        try:
            await self._client.models.list(timeout=min(5.0, self.config.timeout))
        except anthropic.APIError as exc:
            return str(provider_error(exc))
        return None

    async def aclose(self) -> None:
        await self._client.close()


def provider_error(exc: anthropic.APIError) -> ProviderError:
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError("timed out", retryable=True, unanswered=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(f"connection failed: {exc}", retryable=True)
    if isinstance(exc, anthropic.APIStatusError):
        return status_error(exc.status_code, exc.message, exc.response.headers.get("retry-after"))
    return ProviderError(f"{type(exc).__name__}: {exc}", retryable=True)


@register("anthropic")
def build(name: str, config: ModelConfig, env: Mapping[str, str]) -> Provider:
    return AnthropicProvider(name, config, env)
