"""The gateway: every model call in quarry, by role, with retries, fallback and accounting.

A call names a role; the role's chain of models is tried in order. Within one model, retryable
failures (429, 5xx, timeouts) are retried with full-jitter backoff or the server's Retry-After,
as long as the wait fits in the call's deadline. A model that fails for good hands the call to
the next one; a model that fails ``failures_before_cooldown`` calls in a row is skipped for
``cooldown`` seconds (unless every model of the chain is cooling down).

Streams: a stream that fails before its first delta falls through to the next try or model
without the caller seeing anything. Once text has been sent it cannot be taken back, so a
failure after that ends the stream with a ``StreamEnd`` whose ``error`` is set, carrying the text
produced so far and its usage; the stream never raises after its first delta.

Every provider attempt writes a usage record (``accounting``): served, failed, cut short,
cancelled by the caller, or answered from the cache.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from uuid import UUID

import jsonschema
import psycopg
import structlog

from quarry.db.database import Database
from quarry.errors import QuarryError
from quarry.gateway import registry
from quarry.gateway.accounting import (
    MemoryUsageSink,
    Operation,
    Outcome,
    PostgresUsageSink,
    Price,
    UsageLog,
    UsageRecord,
    price_of,
)
from quarry.gateway.cache import ResponseCache, cache_key
from quarry.gateway.registry import Provider
from quarry.gateway.types import (
    CHAT_ROLES,
    Attempted,
    ChainState,
    Completion,
    EmbedResult,
    InvalidMessages,
    InvalidModelOutput,
    InvalidParameter,
    InvalidSchema,
    JsonCompletion,
    MaxTokensTooLarge,
    Message,
    ModelsUnavailable,
    ProviderError,
    Reply,
    Request,
    StreamEnd,
    StreamInterrupted,
    StreamUsage,
    UnknownModel,
    UnknownRole,
    Usage,
)
from quarry.retry import backoff_seconds
from quarry.settings import Settings
from quarry.validation import storable_text, unstorable

log = structlog.get_logger(__name__)
T = TypeVar("T")
MessagesIn = Sequence[Message | Mapping[str, Any]]
PARAMS = frozenset({"max_tokens", "temperature", "stop", "seed", "token_budget"})
NOT_TRIED = "not tried: the call's deadline had passed"


@dataclass(frozen=True)
class CallContext:
    """Who a call is for, for its usage records."""

    role: str
    operation: Operation
    request_id: str
    project_id: UUID | None
    user_id: UUID | None


class Gateway:
    def __init__(
        self,
        models: Mapping[str, Provider],
        roles: Mapping[str, Sequence[str]],
        *,
        usage: UsageLog | None = None,
        cache: ResponseCache | None = None,
        deadline: float = 120.0,
        failures_before_cooldown: int = 3,
        cooldown: float = 60.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        seed: int | None = None,
    ) -> None:
        for role, chain in roles.items():
            for name in chain:
                if name not in models:
                    raise UnknownModel(f"role {role!r} names {name!r}, which is not configured")
        self.models = dict(models)
        self.roles = {role: list(chain) for role, chain in roles.items()}
        self.usage = usage or UsageLog(MemoryUsageSink())
        self.cache = cache
        self.deadline = deadline
        self.failures_before_cooldown = failures_before_cooldown
        self.cooldown = cooldown
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not security
        self._state = {name: ChainState() for name in self.models}
        self._prices: dict[str, Price | None] = {}

    # The interface ---------------------------------------------------------------------------

    async def generate(
        self,
        role: str,
        messages: MessagesIn,
        *,
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> Completion:
        ctx = self._context(role, "generate", request_id, project_id, user_id)
        request = self._request(messages, params)
        return await self._complete(ctx, request)

    async def generate_json(
        self,
        role: str,
        messages: MessagesIn,
        schema: Mapping[str, Any],
        *,
        schema_name: str = "response",
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> JsonCompletion:
        """An object that validates against ``schema``. Output that does not is sent back once
        with the validation error; if the second answer fails too, InvalidModelOutput."""
        ctx = self._context(role, "json", request_id, project_id, user_id)
        validator = _validator(schema)
        request = self._request(messages, params, schema=dict(schema), schema_name=schema_name)

        def valid(text: str) -> bool:
            return _parse_json(text, validator)[1] is None

        deadline = time.monotonic() + self.deadline  # the repair's too: one call, one deadline
        completion = await self._complete(ctx, request, valid, deadline)
        value, problem = _parse_json(completion.text, validator)
        if problem is None:
            return JsonCompletion(value, completion.text, completion.usage)
        log.warning("structured output invalid; asking once more", role=role, problem=problem)
        repair = (
            *request.messages,
            Message("assistant", completion.text),
            Message(
                "user",
                f"That reply is not valid: {problem}. Reply again with only the JSON value, "
                "corrected so that it validates against the schema.",
            ),
        )
        retried = await self._complete(ctx, replace(request, messages=repair), valid, deadline)
        value, problem = _parse_json(retried.text, validator)
        if problem is None:
            both = _add(completion.usage, retried.usage)
            return JsonCompletion(value, retried.text, both, repaired=True)
        raise InvalidModelOutput(
            f"the model's output did not validate against the schema, twice: {problem}",
            output=retried.text[:2000],
        )

    async def stream(
        self,
        role: str,
        messages: MessagesIn,
        *,
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> AsyncIterator[str | StreamEnd]:
        """Text deltas, then one StreamEnd (see the module docstring for failures)."""
        ctx = self._context(role, "stream", request_id, project_id, user_id)
        request = self._request(messages, params)
        chain = await self._fitting_chain(role, request)
        deadline = time.monotonic() + self.deadline
        attempts: list[Attempted] = []
        for provider in chain:
            if time.monotonic() >= deadline:
                attempts.append(Attempted(provider.name, NOT_TRIED, 0))
                continue
            tries = 0
            while True:
                tries += 1
                started = time.monotonic()
                produced: list[str] = []
                first: float | None = None
                reported: StreamUsage | None = None
                items = provider.stream(_resolve(request, provider, deadline))
                try:
                    while True:
                        waited = time.monotonic()
                        try:  # a timeout per delta, without a task per delta (wait_for's)
                            async with asyncio.timeout(_timeout(provider, deadline)):
                                item = await anext(items)
                        except StopAsyncIteration:
                            break
                        except TimeoutError:  # judged by this wait, not the whole stream's
                            raise _timed_out(provider, waited, deadline) from None
                        except (ProviderError, asyncio.CancelledError):
                            raise
                        except Exception as exc:  # a provider's bug must not escape mid-stream
                            raise _unexpected(provider, exc) from exc
                        if isinstance(item, StreamUsage):
                            reported = item
                            continue
                        if first is None:
                            first = time.monotonic()
                        item = storable_text(item)  # see _complete's attempt
                        produced.append(item)
                        yield item
                except ProviderError as exc:
                    if produced:
                        usage = self._account(
                            ctx,
                            provider,
                            request,
                            "".join(produced),
                            reported,
                            started,
                            first,
                            "partial",
                            str(exc),
                        )
                        self._failed(provider, exc)
                        yield StreamEnd(
                            "".join(produced),
                            usage,
                            error=StreamInterrupted(
                                f"{provider.name} failed after sending text: {exc}",
                                model=provider.name,
                            ),
                        )
                        return
                    self._account_error(ctx, provider, started, exc, _prompt(request))
                    wait = self._retry_wait(provider, exc, tries, deadline)
                    if wait is None:
                        attempts.append(Attempted(provider.name, str(exc), tries))
                        self._failed(provider, exc)
                        break
                    await asyncio.sleep(wait)
                    continue
                except (GeneratorExit, asyncio.CancelledError):
                    self._account(
                        ctx,
                        provider,
                        request,
                        "".join(produced),
                        reported,
                        started,
                        first,
                        "cancelled",
                        "the caller stopped reading",
                    )
                    raise
                finally:
                    await items.aclose()
                text = "".join(produced)
                usage = self._account(ctx, provider, request, text, reported, started, first, "ok")
                self._succeeded(provider)
                yield StreamEnd(text, usage, reported.finish_reason if reported else None)
                return
        raise self._unavailable(role, attempts)

    async def embed(
        self,
        role: str,
        texts: Sequence[str],
        *,
        project_id: UUID | None = None,
        user_id: UUID | None = None,
        request_id: str | None = None,
    ) -> EmbedResult:
        ctx = self._context(role, "embed", request_id, project_id, user_id)
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidParameter("texts must be a list of strings")
        listed = list(texts)

        async def attempt(provider: Provider, deadline: float) -> EmbedResult:
            started = time.monotonic()
            result = await provider.embed(listed)
            tokens = result.input_tokens
            if tokens is None:
                tokens = sum(provider.count_tokens(t) for t in listed)
            usage = self._record(
                ctx, provider, tokens, 0, result.input_tokens is None, started, None, "ok"
            )
            return EmbedResult(result.vectors, usage)

        _, embedded = await self._run_chain(
            ctx, self._chain(role), attempt, lambda p: sum(p.count_tokens(t) for t in listed)
        )
        return embedded

    def count_tokens(self, model: str, text: str | MessagesIn) -> int:
        """Exact where the model's tokenizer is known (see ``ready`` for a local model's)."""
        provider = self._model(model)
        if isinstance(text, str):
            return provider.count_tokens(text)
        return provider.count_tokens(_messages(text))

    async def ready(self, model: str) -> None:
        """Load ``model`` where it loads on first use (a local GGUF), off the event loop:
        counting its tokens is synchronous, and would otherwise load it on the loop and stall
        every request meanwhile. A model that cannot load is left to fail where it is called."""
        try:
            await self._model(model).context_window()
        except ProviderError as exc:
            log.warning("model not loaded", model=model, error=str(exc))

    def _model(self, model: str) -> Provider:
        provider = self.models.get(model)
        if provider is None:
            raise UnknownModel(f"no model named {model!r}; known: {', '.join(sorted(self.models))}")
        return provider

    def chain(self, role: str) -> list[Provider]:
        return self._chain(role)

    async def flush(self) -> None:
        await self.usage.flush()

    async def aclose(self) -> None:
        try:
            await self.usage.aclose()
        finally:
            for provider in self.models.values():
                try:
                    await provider.aclose()
                except Exception:
                    log.exception("model not closed cleanly", model=provider.name)

    # One call through the chain ----------------------------------------------------------------

    async def _complete(
        self,
        ctx: CallContext,
        request: Request,
        keep: Callable[[str], bool] = lambda _text: True,
        deadline: float | None = None,
    ) -> Completion:
        """One call through the chain (or the cache). ``keep`` says whether an answer may be
        cached: structured output is cached only once it validates. ``deadline``: when the
        call must end (time.monotonic()), the gateway's deadline from now by default."""
        chain = await self._fitting_chain(ctx.role, request)
        cached = await self._cached(ctx, chain, request)
        if cached is not None:
            return cached

        async def attempt(provider: Provider, deadline: float) -> Completion:
            started = time.monotonic()
            reply = await provider.generate(_resolve(request, provider, deadline))
            # A model's text goes into Postgres (answers, summaries, the cache) and out as
            # UTF-8: a NUL or a lone surrogate in it (a provider's JSON may carry either)
            # would fail both, so they become a space and U+FFFD.
            text = storable_text(reply.text)
            usage = self._account(
                ctx, provider, request, text, _as_usage(reply), started, None, "ok"
            )
            return Completion(text, usage, reply.finish_reason)

        provider, completion = await self._run_chain(
            ctx, chain, attempt, _prompt(request), deadline
        )
        if keep(completion.text):
            await self._remember(ctx, provider, _resolve(request, provider), completion)
        return completion

    async def _run_chain(
        self,
        ctx: CallContext,
        chain: list[Provider],
        attempt: Callable[[Provider, float], Awaitable[T]],
        prompt: Callable[[Provider], int],
        deadline: float | None = None,
    ) -> tuple[Provider, T]:
        """Try the chain in order; ``attempt(provider, deadline)`` is one provider call, and
        ``prompt(provider)`` its input's tokens by that model's count (for an attempt that
        ends with no answer)."""
        if deadline is None:
            deadline = time.monotonic() + self.deadline
        attempts: list[Attempted] = []
        for provider in chain:
            if time.monotonic() >= deadline:
                attempts.append(Attempted(provider.name, NOT_TRIED, 0))
                continue
            tries = 0
            while True:
                tries += 1
                started = time.monotonic()
                try:
                    result = await asyncio.wait_for(
                        attempt(provider, deadline), _timeout(provider, deadline)
                    )
                except TimeoutError:
                    exc = _timed_out(provider, started, deadline)
                except asyncio.CancelledError:  # sent, perhaps processed: as a timeout is
                    self._record(
                        ctx,
                        provider,
                        _estimate(prompt, provider),
                        0,
                        True,
                        started,
                        None,
                        "cancelled",
                        "the caller stopped waiting",
                    )
                    raise
                except ProviderError as error:
                    exc = error
                except QuarryError:
                    raise  # the caller's input, not the model's failure
                except Exception as error:  # a provider's bug: the next model may still serve
                    exc = _unexpected(provider, error)
                else:
                    self._succeeded(provider)
                    return provider, result
                self._account_error(ctx, provider, started, exc, prompt)
                wait = self._retry_wait(provider, exc, tries, deadline)
                if wait is None:
                    attempts.append(Attempted(provider.name, str(exc), tries))
                    self._failed(provider, exc)
                    break
                log.warning(
                    "model call retry",
                    model=provider.name,
                    attempt=tries,
                    wait_s=round(wait, 2),
                    reason=str(exc),
                )
                await asyncio.sleep(wait)
        raise self._unavailable(ctx.role, attempts)

    def _retry_wait(
        self, provider: Provider, exc: ProviderError, tries: int, deadline: float
    ) -> float | None:
        """Seconds to wait before trying this model again, or None to give up on it."""
        if not exc.retryable or tries > provider.config.max_retries:
            return None
        wait = exc.retry_after
        if wait is None:
            wait = backoff_seconds(tries - 1, self.backoff_base, self.backoff_cap, self._rng)
        if time.monotonic() + wait >= deadline:
            return None
        return wait

    def _unavailable(self, role: str, attempts: list[Attempted]) -> ModelsUnavailable:
        tried = "; ".join(f"{a.model}: {a.reason} ({a.tries} tries)" for a in attempts)
        return ModelsUnavailable(
            f"no model of role {role!r} could serve the call: {tried or 'deadline passed'}",
            attempts,
        )

    # Chains, cool-down and limits -------------------------------------------------------------

    def _role(self, role: str) -> list[str]:
        """The role's chain of model names, or UnknownRole naming the configured roles."""
        names = self.roles.get(role)
        if names is None:
            known = ", ".join(sorted(self.roles))
            raise UnknownRole(f"no role named {role!r}; configured roles: {known}")
        return names

    def _chain(self, role: str) -> list[Provider]:
        names = self._role(role)
        now = time.monotonic()
        ready = [n for n in names if self._state[n].cooled_until <= now]
        if not ready:
            log.warning("every model of the role is cooling down; trying them anyway", role=role)
            ready = list(names)
        return [self.models[name] for name in ready]

    async def _fitting_chain(self, role: str, request: Request) -> list[Provider]:
        """The chain without models whose context cannot hold the prompt and max_tokens, nor
        those over the request's ``token_budget`` by their own count (a fallback model with
        another tokenizer can count the same prompt as more)."""
        chain = self._chain(role)
        fitting: list[Provider] = []
        limits: list[str] = []
        for provider in chain:
            window = await provider.context_window()  # loads a local model: counting may follow
            needed = _resolve(request, provider).max_tokens
            # The prompt is counted once, and only where it can decide (a max_tokens past the
            # window cannot fit whatever the prompt).
            if request.token_budget is not None or (window is not None and needed <= window):
                needed += provider.count_tokens(list(request.messages))
            if request.token_budget is not None and needed > request.token_budget:
                limits.append(
                    f"{provider.name} counts {needed} tokens, over the budget of "
                    f"{request.token_budget}"
                )
            elif window is None or needed <= window:
                fitting.append(provider)
            else:
                limits.append(f"{provider.name} holds {window} tokens, the call needs {needed}")
        if not fitting:
            raise MaxTokensTooLarge(
                f"max_tokens {request.max_tokens or 'default'} with this prompt does not fit "
                f"any model of role {role!r}: {'; '.join(limits)}",
                max_tokens=request.max_tokens,
            )
        return fitting

    def _succeeded(self, provider: Provider) -> None:
        state = self._state[provider.name]
        state.failures = 0

    def _failed(self, provider: Provider, exc: ProviderError) -> None:
        """The model failed this call for good; count it toward cool-down if it is to blame."""
        if not exc.blames_model:
            return
        reason = str(exc)
        state = self._state[provider.name]
        state.failures += 1
        if state.failures >= self.failures_before_cooldown and self.cooldown > 0:
            state.cooled_until = time.monotonic() + self.cooldown
            state.failures = 0
            log.warning(
                "model cooled down", model=provider.name, seconds=self.cooldown, reason=reason
            )

    def cooling(self) -> dict[str, float]:
        """Models cooling down now, with the seconds left."""
        now = time.monotonic()
        return {n: s.cooled_until - now for n, s in self._state.items() if s.cooled_until > now}

    # Cache --------------------------------------------------------------------------------------

    async def _cached(
        self, ctx: CallContext, chain: list[Provider], request: Request
    ) -> Completion | None:
        if self.cache is None:
            return None
        keys = {}
        for provider in chain:
            resolved = _resolve(request, provider)
            if resolved.temperature == 0:
                key = cache_key(provider.name, provider.config, resolved, ctx.project_id)
                keys[key] = provider
        if not keys:
            return None
        try:
            found = await self.cache.get(list(keys))
        except psycopg.Error:
            log.exception("response cache unreadable; calling the model")
            return None
        for key, provider in keys.items():
            hit = found.get(key)
            if hit is None:
                continue
            usage = self._record(
                ctx,
                provider,
                hit.input_tokens,
                hit.output_tokens,
                False,
                time.monotonic(),
                None,
                "cached",
            )
            return Completion(hit.text, usage, hit.finish_reason)
        return None

    async def _remember(
        self, ctx: CallContext, provider: Provider, request: Request, done: Completion
    ) -> None:
        if self.cache is None or request.temperature != 0:
            return
        key = cache_key(provider.name, provider.config, request, ctx.project_id)
        try:
            await self.cache.put(
                key,
                provider.name,
                done.text,
                done.usage.input_tokens,
                done.usage.output_tokens,
                done.finish_reason,
            )
        except psycopg.Error:
            log.exception("response not cached", model=provider.name)

    # Accounting ---------------------------------------------------------------------------------

    def _account(
        self,
        ctx: CallContext,
        provider: Provider,
        request: Request,
        text: str,
        reported: StreamUsage | None,
        started: float,
        first: float | None,
        outcome: Outcome,
        error: str | None = None,
    ) -> Usage:
        """Record a call that produced text; tokens the provider did not report are counted."""
        input_tokens = reported.input_tokens if reported else None
        output_tokens = reported.output_tokens if reported else None
        estimated = input_tokens is None or output_tokens is None
        if input_tokens is None:
            input_tokens = provider.count_tokens(list(request.messages))
        if output_tokens is None:
            output_tokens = provider.count_tokens(text) if text else 0
        return self._record(
            ctx, provider, input_tokens, output_tokens, estimated, started, first, outcome, error
        )

    def _account_error(
        self,
        ctx: CallContext,
        provider: Provider,
        started: float,
        exc: ProviderError,
        prompt: Callable[[Provider], int],
    ) -> None:
        """A failed attempt. An error answer produced nothing and costs nothing; a request left
        unanswered (a timeout) may still be processed and billed by the provider, so it counts
        at its prompt's estimated tokens and their price."""
        if exc.unanswered:
            tokens = _estimate(prompt, provider)
            self._record(ctx, provider, tokens, 0, True, started, None, "error", str(exc))
        else:
            self._record(ctx, provider, 0, 0, False, started, None, "error", str(exc), cost=0.0)

    def _record(
        self,
        ctx: CallContext,
        provider: Provider,
        input_tokens: int,
        output_tokens: int,
        estimated: bool,
        started: float,
        first: float | None,
        outcome: Outcome,
        error: str | None = None,
        *,
        cost: float | None = None,
    ) -> Usage:
        now = time.monotonic()
        if cost is None and outcome != "cached":
            price = self._price(provider)
            cost = None if price is None else price.cost(input_tokens, output_tokens)
        elif outcome == "cached":
            cost = 0.0
        latency_ms = (now - started) * 1000
        ttft_ms = None if first is None else (first - started) * 1000
        self.usage.record(
            UsageRecord(
                request_id=ctx.request_id,
                project_id=ctx.project_id,
                user_id=ctx.user_id,
                role=ctx.role,
                operation=ctx.operation,
                provider=provider.config.provider,
                model=provider.name,
                provider_model=provider.provider_model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                tokens_estimated=estimated,
                cost=cost,
                latency_ms=latency_ms,
                ttft_ms=ttft_ms,
                outcome=outcome,
                error=error[:1000].replace("\x00", "") if error else None,
            )
        )
        usage = Usage(
            request_id=ctx.request_id,
            role=ctx.role,
            model=provider.name,
            provider=provider.config.provider,
            provider_model=provider.provider_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            estimated=estimated,
            cached=outcome == "cached",
        )
        return usage

    def _price(self, provider: Provider) -> Price | None:
        if provider.name not in self._prices:
            price = price_of(provider.config, provider.provider_model)
            if price is None:
                log.warning(
                    "model has no price; its usage is recorded with cost null",
                    model=provider.name,
                    provider_model=provider.provider_model,
                    fix=f"set price_input and price_output under [models.{provider.name}]",
                )
            self._prices[provider.name] = price
        return self._prices[provider.name]

    # Input checks -----------------------------------------------------------------------------

    def _context(
        self,
        role: str,
        operation: Operation,
        request_id: str | None,
        project_id: UUID | None,
        user_id: UUID | None,
    ) -> CallContext:
        self._role(role)
        if request_id is None:
            bound = structlog.contextvars.get_contextvars().get("request_id")
            request_id = str(bound) if bound else uuid.uuid4().hex
        return CallContext(role, operation, request_id, project_id, user_id)

    def _request(
        self,
        messages: MessagesIn,
        params: Mapping[str, Any],
        *,
        schema: dict[str, Any] | None = None,
        schema_name: str = "response",
    ) -> Request:
        unknown = set(params) - PARAMS
        if unknown:
            raise InvalidParameter(
                f"unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(sorted(PARAMS))}"
            )
        max_tokens = params.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidParameter("max_tokens must be a whole number of at least 1")
        temperature = params.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            raise InvalidParameter("temperature must be a number from 0 to 2")
        stop = params.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not all(isinstance(s, str) and s for s in stop):
            raise InvalidParameter("stop must be a string or a list of non-empty strings")
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidParameter("seed must be a whole number")
        budget = params.get("token_budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise InvalidParameter("token_budget must be a whole number")
        return Request(
            messages=_messages(messages),
            max_tokens=max_tokens or 0,  # 0: the serving model's own default, set per model
            temperature=-1.0 if temperature is None else float(temperature),
            timeout=0.0,
            schema=schema,
            schema_name=schema_name,
            stop=tuple(stop),
            seed=seed,
            token_budget=budget,
        )


def _messages(messages: MessagesIn) -> tuple[Message, ...]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidMessages("messages must be a list of {role, content} objects")
    if not messages:
        raise InvalidMessages("messages must not be empty")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        if isinstance(message, Message):
            role, content = message.role, message.content
        elif isinstance(message, Mapping):
            extra = set(message) - {"role", "content"}
            if extra:
                raise InvalidMessages(
                    f"messages[{index}] has unknown field {sorted(extra)[0]!r}", index=index
                )
            role, content = message.get("role"), message.get("content")  # type: ignore[assignment]
        else:
            raise InvalidMessages(
                f"messages[{index}] must be an object with role and content", index=index
            )
        if role not in CHAT_ROLES:
            raise InvalidMessages(
                f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}, not {role!r}",
                index=index,
            )
        if not isinstance(content, str):
            raise InvalidMessages(f"messages[{index}].content must be a string", index=index)
        checked.append(Message(role, content))
    return tuple(checked)


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    if not isinstance(schema, Mapping):
        raise InvalidSchema("the schema must be a JSON object")
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InvalidSchema(f"the schema is not JSON: {exc}") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidSchema(f"not a valid JSON Schema at {where}: {exc.message}") from None
    return cls(dict(schema))


def _parse_json(text: str, validator: jsonschema.protocols.Validator) -> tuple[Any, str | None]:
    """The value and None, or None and what is wrong with it."""
    body = text.strip()
    if body.startswith("```"):  # a fenced block, as prompt-only servers often answer
        body = body.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    unfit = unstorable(value)  # "\u0000" or NaN parse, and Postgres' jsonb refuses them
    if unfit is not None:
        return None, f"at {unfit[0].replace('.', '/') or '(root)'}: {unfit[1]}"
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"at {where}: {error.message}"
    return value, None


def _timed_out(provider: Provider, started: float, deadline: float) -> ProviderError:
    """A timeout is the model's fault when it had its whole timeout; when the call's deadline
    cut it short, it is the deadline's, and does not count toward the model's cool-down."""
    cut_short = deadline - started < provider.config.timeout
    return ProviderError(
        "the call's deadline passed" if cut_short else "timed out",
        retryable=True,
        blames_model=not cut_short,
        unanswered=True,
    )


def _prompt(request: Request) -> Callable[[Provider], int]:
    """How many tokens the request's messages are, by a given model's count."""
    return lambda provider: provider.count_tokens(list(request.messages))


def _estimate(prompt: Callable[[Provider], int], provider: Provider) -> int:
    """A failed attempt's input tokens; 0 where even counting fails (the failure is
    recorded either way)."""
    try:
        return prompt(provider)
    except Exception:
        log.exception("counting a failed call's prompt failed", model=provider.name)
        return 0


def _unexpected(provider: Provider, exc: Exception) -> ProviderError:
    log.error("provider raised an unexpected error", model=provider.name, exc_info=exc)
    return ProviderError(f"unexpected {type(exc).__name__}: {exc}", retryable=False)


def _add(first: Usage, second: Usage) -> Usage:
    """Both calls of a repaired answer, as one: tokens, cost (unknown if either is) and time."""
    cost = None if first.cost is None or second.cost is None else first.cost + second.cost
    return replace(
        second,
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        cost=cost,
        latency_ms=first.latency_ms + second.latency_ms,
        estimated=first.estimated or second.estimated,
        cached=first.cached and second.cached,
    )


def _as_usage(reply: Reply) -> StreamUsage:
    return StreamUsage(reply.input_tokens, reply.output_tokens, reply.finish_reason)


def _timeout(provider: Provider, deadline: float) -> float:
    return max(0.001, min(provider.config.timeout, deadline - time.monotonic()))


def _resolve(request: Request, provider: Provider, deadline: float | None = None) -> Request:
    """The request as one model gets it: its own defaults where the caller gave none."""
    config = provider.config
    return replace(
        request,
        max_tokens=request.max_tokens or config.max_tokens,
        temperature=config.temperature if request.temperature < 0 else request.temperature,
        timeout=config.timeout if deadline is None else _timeout(provider, deadline),
    )


def build_gateway(
    settings: Settings, db: Database | None, env: Mapping[str, str] | None = None
) -> Gateway:
    """The gateway the settings describe. Every model of every role is built now, so a missing
    key or file stops the start with a message naming the variable (ProviderConfigError)."""
    table = settings.model_table
    used = {name for chain in settings.model_roles.values() for name in chain}
    providers = {name: registry.build(name, table[name], env) for name in sorted(used)}
    usage = UsageLog(PostgresUsageSink(db) if db is not None else MemoryUsageSink())
    cache = ResponseCache(db, settings.model_cache_ttl) if settings.model_cache and db else None
    return Gateway(
        providers,
        settings.model_roles,
        usage=usage,
        cache=cache,
        deadline=settings.model_call_deadline,
        failures_before_cooldown=settings.model_failures_before_cooldown,
        cooldown=settings.model_cooldown,
    )
