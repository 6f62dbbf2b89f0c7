"""How models and roles are configured: the part of the settings the gateway reads.

A *model* is one configured endpoint (``[models.gpt]`` in the TOML file): a provider from the
registry, the provider's own model id, and the parameters every call to it uses. A *role*
(``[roles]``) is an ordered chain of model names: the first serves, the next takes over when it
fails for good. Callers name a role, never a model or a provider.

With no configuration every role works offline: ``local`` is the bundled SmolLM2 GGUF through
llama.cpp and ``local-embedding`` the bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_ROLES = ("generation", "analysis", "maintenance", "embedding", "rerank")


class ModelConfig(BaseModel):
    """One model a role can call."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(
        description="a provider from the registry: local, sentence_transformers, openai, "
        "anthropic or openai_compatible"
    )
    model: str = Field(
        default="",
        description="the provider's model id (gpt-4o-mini, claude-haiku-4-5, the name a vLLM "
        "server serves); for local models a label (default: the file name)",
    )
    path: Path | None = Field(
        default=None,
        description="local providers: a GGUF file or sentence-transformers directory "
        "(default: the bundled model)",
    )
    base_url: str | None = Field(default=None, description="the API's base URL")
    api_key_env: str | None = Field(
        default=None,
        description="the environment variable holding the API key (default: OPENAI_API_KEY "
        "for openai, ANTHROPIC_API_KEY for anthropic, none for openai_compatible)",
    )
    max_tokens: int = Field(default=512, ge=1, description="output tokens per call by default")
    temperature: float = Field(default=0.0, ge=0, le=2, description="sampling temperature")
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds one attempt may take; for a stream, seconds between two deltas "
        "(the call's deadline bounds the whole)",
    )
    max_retries: int = Field(
        default=3, ge=0, le=10, description="retries of 429, 5xx and timeouts before giving up"
    )
    context_window: int | None = Field(
        default=None,
        ge=16,
        description="tokens the model reads and writes in all (local: read from the GGUF)",
    )
    price_input: float | None = Field(
        default=None, ge=0, description="USD per million input tokens (overrides the table)"
    )
    price_output: float | None = Field(
        default=None, ge=0, description="USD per million output tokens (overrides the table)"
    )
    structured_output: Literal["json_schema", "json_object", "prompt"] = Field(
        default="json_schema",
        description="openai_compatible: how the server takes a schema: json_schema "
        "(response_format json_schema: OpenAI, vLLM), json_object (response_format json_object "
        "with a schema: llama.cpp's Python server), or prompt (the schema goes into the prompt); "
        "the answer is validated whichever it is",
    )
    tokenizer: Path | None = Field(
        default=None,
        description="a tokenizer.json for exact token counts of a remote model "
        "(default: an estimate of 4 bytes a token)",
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="local GGUF: CPU threads (default: every core)"
    )


def default_models() -> dict[str, ModelConfig]:
    return {
        "local": ModelConfig(provider="local", max_tokens=256),
        "local-embedding": ModelConfig(provider="sentence_transformers"),
    }


def default_roles() -> dict[str, list[str]]:
    roles = {role: ["local"] for role in BUILTIN_ROLES}
    roles["embedding"] = ["local-embedding"]
    return roles
