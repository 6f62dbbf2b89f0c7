"""Any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, hosted APIs) at a base URL.

The wire protocol is OpenAI's, so this is ``OpenAIProvider`` with three differences: a base URL
is required, a key is optional (``api_key_env`` names one when the server wants it), and
``max_tokens`` is sent under its classic name, which every such server reads. The capability flag
``structured_output`` says how the server takes a schema: ``json_schema`` (OpenAI's
``response_format``, as vLLM does), ``json_object`` (``response_format`` json_object with a
``schema``, as llama.cpp's Python server does) or ``prompt`` (the schema goes into the prompt).
The gateway validates the answer whichever it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from quarry.gateway.config import ModelConfig
from quarry.gateway.providers.openai import OpenAIProvider
from quarry.gateway.registry import Provider, ProviderConfigError, register


class OpenAICompatibleProvider(OpenAIProvider):
    default_key_env = None
    max_tokens_param = "max_tokens"


@register("openai_compatible")
def build(name: str, config: ModelConfig, env: Mapping[str, str]) -> Provider:
    if not config.base_url:
        raise ProviderConfigError(
            f"model {name!r} (provider openai_compatible) needs base_url, such as "
            "http://host:8000/v1"
        )
    return OpenAICompatibleProvider(name, config, env)
