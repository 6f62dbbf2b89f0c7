"""The nouns of the gateway: messages, requests to a provider, what comes back, and errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from quarry.errors import QuarryError

ChatRole = Literal["system", "user", "assistant"]
CHAT_ROLES: tuple[ChatRole, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: ChatRole
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Request:
    """One call as a provider sees it: parameters already resolved against the model's config."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float
    timeout: float
    schema: dict[str, Any] | None = None
    schema_name: str = "response"
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The gateway's, not the provider's: prompt and max_tokens must fit in this many tokens
    # by the serving model's own count (a model of the chain over it is not tried).
    token_budget: int | None = None


@dataclass(frozen=True)
class Reply:
    """A provider's whole answer. Token counts are None where the provider did not report them
    (the gateway then counts them itself)."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    # In OpenAI's words whichever the provider: "stop", or "length" for an answer cut at
    # max_tokens (providers translate their own).
    finish_reason: str | None = None


@dataclass(frozen=True)
class StreamUsage:
    """The last item of a provider's stream, when the provider reports usage."""

    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    input_tokens: int | None = None


@dataclass(frozen=True)
class Usage:
    """What one gateway call cost: the model that served it, tokens, money and time.

    ``cost`` is None when the model has no price (never a made-up zero); ``estimated`` is true
    when the tokens were counted by quarry rather than reported by the provider."""

    request_id: str
    role: str
    model: str
    provider: str
    provider_model: str
    input_tokens: int
    output_tokens: int
    cost: float | None
    latency_ms: float
    ttft_ms: float | None = None
    estimated: bool = False
    cached: bool = False


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    finish_reason: str | None = None


@dataclass(frozen=True)
class JsonCompletion:
    value: Any
    text: str
    usage: Usage
    repaired: bool = False


@dataclass(frozen=True)
class StreamEnd:
    """The last item ``Gateway.stream`` yields. ``error`` is set when the stream failed after
    text had been sent: ``text`` is then what was produced before the failure, and ``usage``
    counts it."""

    text: str
    usage: Usage
    finish_reason: str | None = None
    error: GatewayError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage


@dataclass
class Attempted:
    """One model's try at a call, for the error that reports a whole chain failing."""

    model: str
    reason: str
    tries: int = 1


class ProviderError(Exception):
    """A provider call failed. ``retryable`` failures (429, 5xx, timeouts, dropped connections)
    are retried with backoff; others fail the model at once and the chain moves on.

    ``blames_model`` says whether the failure counts toward the model's cool-down: it does when
    the model is unavailable (the retryable kinds, a rejected key, an unknown model), not when
    the request was at fault (a 400 for a prompt too long, a content filter): one caller's
    bad requests must not cool a healthy model for everyone.

    ``unanswered`` says the request may have reached the model with no answer coming back (a
    timeout): the provider may still process and bill it, so the attempt is accounted at its
    prompt's estimated tokens and their price, where an error answer costs nothing."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        blames_model: bool | None = None,
        unanswered: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.blames_model = retryable if blames_model is None else blames_model
        self.unanswered = unanswered


class GatewayError(QuarryError):
    code = "model_error"
    status = 502
    title = "Model call failed"


class ModelsUnavailable(GatewayError):
    """Every model of the role's chain failed for good."""

    code = "models_unavailable"
    status = 503
    title = "No model could serve the call"

    def __init__(self, detail: str, attempts: Sequence[Attempted] = ()) -> None:
        super().__init__(
            detail,
            attempts=[{"model": a.model, "reason": a.reason, "tries": a.tries} for a in attempts],
        )
        self.attempts = list(attempts)


class StreamInterrupted(GatewayError):
    code = "stream_interrupted"
    title = "The model's stream broke off"


class InvalidModelOutput(GatewayError):
    """Structured output that failed validation twice (once repaired)."""

    code = "invalid_model_output"
    title = "The model's output did not match the schema"


class UnknownRole(QuarryError):
    code = "unknown_role"
    status = 422
    title = "Unknown model role"


class UnknownModel(QuarryError):
    code = "unknown_model"
    status = 422
    title = "Unknown model"


class InvalidMessages(QuarryError):
    code = "invalid_messages"
    status = 422
    title = "Messages are malformed"


class InvalidSchema(QuarryError):
    code = "invalid_schema"
    status = 422
    title = "Not a valid JSON Schema"


class MaxTokensTooLarge(QuarryError):
    code = "max_tokens_too_large"
    status = 422
    title = "max_tokens exceeds the model's context"


class InvalidParameter(QuarryError):
    code = "invalid_model_parameter"
    status = 422
    title = "Invalid model parameter"


class Unsupported(ProviderError):
    """The provider cannot do this at all (embeddings from Anthropic): not retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass
class ChainState:
    """Failures in a row and the cool-down of one model, shared by every call."""

    failures: int = 0
    cooled_until: float = 0.0
