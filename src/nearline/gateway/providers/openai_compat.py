"""Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI, another nearline).

One pooled ``aiohttp`` session per upstream (aiohttp spends about a third of httpx's CPU per
streamed request here, and the gateway's hot path is dominated by the upstream call), chunks
passed on as they arrive, separate connect and read timeouts, and the request's deadline as
the total timeout. aiohttp's exceptions and the upstream's status codes are translated here,
once, into nearline's error tree: timeout → 504, 5xx/reset/refused → 502, 429 → 429 with its
Retry-After, other 4xx → 400.

The request goes upstream as the client sent it (tools, ``tool_choice``, response formats,
``n``, logprobs, image parts …), nearline's extension removed; the trace context of the
call's span goes with it as a W3C ``traceparent`` header. From the stream, every choice's
``delta.content`` (with its logprobs) and ``delta.tool_calls`` fragments are passed on as
they arrive, and the upstream's response id and model are kept for the spans.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from nearline.config import HttpProviderSettings
from nearline.core.errors import (
    NearlineError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from nearline.core.events import Delta, Done, Event, FinishReason, ToolCallDelta, Usage
from nearline.core.provider import Capabilities, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.providers.http_upstream import HttpUpstream
from nearline.gateway.telemetry.tracing import propagation_headers

_FINISH_REASONS: set[str] = {"stop", "length", "content_filter", "tool_calls"}


def upstream_payload(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The request as the upstream should see it: nearline's extension removed, usage asked."""
    payload = request.model_dump(
        exclude_none=True, exclude={"nearline", "stream_options"}, by_alias=True
    )
    payload["model"] = upstream_model
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    return payload


class OpenAICompatProvider(HttpUpstream):
    def __init__(self, name: str, settings: HttpProviderSettings) -> None:
        super().__init__(name, settings)
        self.capabilities = Capabilities(tools=True, logprobs=True)
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        session = self._ensure_session()
        body = orjson.dumps(upstream_payload(call.request, call.upstream_model))
        remaining = None if call.deadline is None else call.deadline.remaining()
        try:
            async with session.post(
                self._url,
                data=body,
                headers=self._headers | propagation_headers(),
                timeout=self._timeout(remaining),
            ) as response:
                finished = False
                try:
                    if response.status >= 400:
                        raise _status_error(
                            self.name,
                            response.status,
                            await response.read(),
                            response.headers.get("Retry-After"),
                            response.reason,
                        )
                    # closed here, not left to the loop's finalizer hook (a wake-up and a
                    # task per request) when the consumer stops at Done
                    async with aclosing(_events_from_sse(self.name, response)) as events:
                        async for event in events:
                            yield event
                    finished = True
                finally:
                    if not finished:
                        response.close()  # the client left or it failed: drop the connection
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"upstream {self.name!r} timed out ({type(exc).__name__})"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream {self.name!r} connection failed: {type(exc).__name__}: {exc}"
            ) from exc


def _status_error(
    name: str, status: int, content: bytes, retry_after: str | None, reason: str | None
) -> NearlineError:
    message = _upstream_message(content, reason)
    if status == 429:
        return UpstreamRateLimited(
            f"upstream {name!r} rate limited: {message}", retry_after_s=_retry_after(retry_after)
        )
    if status >= 500:
        return UpstreamError(f"upstream {name!r} answered {status}: {message}")
    if status == 408:
        return UpstreamTimeout(f"upstream {name!r} answered {status}: {message}")
    return UpstreamRejected(f"upstream {name!r} rejected the request ({status}): {message}")


def _upstream_message(content: bytes, reason: str | None) -> str:
    try:
        return str(orjson.loads(content)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return content[:200].decode(errors="replace") or (reason or "")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


async def _events_from_sse(
    name: str, response: aiohttp.ClientResponse
) -> AsyncGenerator[Event, None]:
    finish_reasons: dict[int, FinishReason] = {}
    usage: Usage | None = None
    response_id: str | None = None
    response_model: str | None = None
    done = False
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {name!r} sent a malformed chunk") from exc
        if not isinstance(chunk, dict):
            raise UpstreamError(f"upstream {name!r} sent a chunk that is not an object")
        if "error" in chunk:
            raise UpstreamError(f"upstream {name!r} failed mid-stream: {chunk['error']}")
        response_id = response_id or _str_or_none(chunk.get("id"))
        response_model = response_model or _str_or_none(chunk.get("model"))
        if chunk.get("usage"):
            raw_usage = chunk["usage"]
            details = raw_usage.get("prompt_tokens_details") or {}
            usage = Usage(
                prompt_tokens=int(raw_usage.get("prompt_tokens", 0)),
                completion_tokens=int(raw_usage.get("completion_tokens", 0)),
                cached_tokens=int(details.get("cached_tokens") or 0),
            )
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index") or 0)
            for event in _choice_events(choice, index):
                yield event
            reason = choice.get("finish_reason")
            if reason in _FINISH_REASONS:
                finish_reasons[index] = reason
    if not done:
        raise UpstreamError(f"upstream {name!r} ended the stream without [DONE]")
    if 0 not in finish_reasons:
        raise UpstreamError(f"upstream {name!r} ended the stream without a finish_reason")
    if usage is not None:
        yield usage
    more = tuple(finish_reasons.get(i, "stop") for i in range(1, max(finish_reasons) + 1))
    yield Done(finish_reasons[0], more, response_id=response_id, response_model=response_model)


def _choice_events(choice: dict[str, Any], index: int) -> list[Event]:
    """The answer pieces one chunk's choice carries: its text (with its logprobs) and its
    tool-call fragments."""
    delta = choice.get("delta") or {}
    events: list[Event] = []
    text = delta.get("content") or ""
    logprobs = (choice.get("logprobs") or {}).get("content")
    if text or logprobs:
        events.append(
            Delta(text, choice=index, logprobs=None if logprobs is None else tuple(logprobs))
        )
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {}
        events.append(
            ToolCallDelta(
                index=int(call.get("index") or 0),
                id=_str_or_none(call.get("id")),
                name=_str_or_none(function.get("name")),
                arguments=str(function.get("arguments") or ""),
                choice=index,
            )
        )
    return events


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
