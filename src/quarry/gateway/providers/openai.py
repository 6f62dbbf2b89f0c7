"""OpenAI through the official SDK: chat completions, streaming with usage, ``response_format``
json_schema, embeddings. ``openai_compatible`` reuses this class for any other base URL.

The SDK's own retries are off (``max_retries=0``): the gateway retries, with one policy for every
provider, inside the call's deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx2
import openai

from quarry.gateway.config import ModelConfig
from quarry.gateway.registry import Provider, TokenCounter, api_key, register, status_error
from quarry.gateway.types import (
    Embeddings,
    Message,
    ProviderError,
    Reply,
    Request,
    StreamUsage,
)


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """For servers without native structured output: the schema, in the prompt."""
    return (
        "Reply with one JSON value and nothing else. It must validate against this JSON "
        f"Schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )


class OpenAIProvider:
    default_key_env: str | None = "OPENAI_API_KEY"
    max_tokens_param = "max_completion_tokens"

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
        self.structured_output = config.structured_output
        self._count = TokenCounter(config.tokenizer)
        self._client = openai.AsyncOpenAI(
            api_key=api_key(name, config, env, self.default_key_env) or "not-needed",
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout,
            http_client=http_client,
        )

    def _params(self, request: Request) -> dict[str, Any]:
        messages = [m.as_dict() for m in request.messages]
        params: dict[str, Any] = {
            "model": self.provider_model,
            self.max_tokens_param: request.max_tokens,
            "temperature": request.temperature,
            "timeout": request.timeout,
        }
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        if request.schema is not None:
            if self.structured_output == "json_schema":
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": request.schema},
                }
            elif self.structured_output == "json_object":
                params["response_format"] = {"type": "json_object", "schema": request.schema}
            else:
                messages = [
                    {"role": "system", "content": schema_instruction(request.schema)},
                    *messages,
                ]
        params["messages"] = messages
        return params

    async def generate(self, request: Request) -> Reply:
        try:
            response = await self._client.chat.completions.create(**self._params(request))
        except openai.APIError as exc:
            raise provider_error(exc) from exc
        if not response.choices:
            raise ProviderError("the response has no choices", retryable=True)
        choice = response.choices[0]
        usage = response.usage
        return Reply(
            text=choice.message.content or "",
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason,
        )

    async def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        params = self._params(request)
        finish: str | None = None
        try:
            chunks = await self._client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
            async with chunks:
                async for chunk in chunks:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content
                        finish = choice.finish_reason or finish
                    if chunk.usage is not None:
                        yield StreamUsage(
                            chunk.usage.prompt_tokens, chunk.usage.completion_tokens, finish
                        )
                        return
        except openai.APIError as exc:
            raise provider_error(exc) from exc
        except httpx2.TransportError as exc:  # the connection dropped mid-stream
            raise ProviderError(f"the stream broke off: {exc}", retryable=True) from exc
        if finish is None:
            raise ProviderError("the stream ended without a finish reason", retryable=True)
        yield StreamUsage(None, None, finish)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        try:
            response = await self._client.embeddings.create(
                model=self.provider_model, input=list(texts)
            )
        except openai.APIError as exc:
            raise provider_error(exc) from exc
        items = sorted(response.data, key=lambda item: item.index)
        return Embeddings(
            [list(item.embedding) for item in items],
            response.usage.prompt_tokens if response.usage else None,
        )

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        return self._count(text)

    async def context_window(self) -> int | None:
        return self.config.context_window

    async def probe(self) -> str | None:
        try:
            await self._client.models.list(timeout=min(5.0, self.config.timeout))
        except openai.APIError as exc:
            return str(provider_error(exc))
        return None

    async def aclose(self) -> None:
        await self._client.close()


def provider_error(exc: openai.APIError) -> ProviderError:
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timed out", retryable=True, unanswered=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"connection failed: {exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return status_error(
            exc.status_code,
            exc.message,
            exc.response.headers.get("retry-after"),
            code=exc.code if isinstance(exc.code, str) else None,
        )
    # Malformed responses and stream errors the SDK raises itself: worth another try.
    return ProviderError(f"{type(exc).__name__}: {exc}", retryable=True)


@register("openai")
def build(name: str, config: ModelConfig, env: Mapping[str, str]) -> Provider:
    return OpenAIProvider(name, config, env)
