"""Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI, another nearline).

One pooled ``httpx.AsyncClient`` per upstream, chunks passed on as they arrive, separate
connect and read timeouts. httpx's exceptions and the upstream's status codes are
translated here, once, into nearline's error tree: timeout → 504, 5xx/reset → 502,
429 → 429 with its Retry-After.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from nearline.config import HttpProviderSettings
from nearline.errors import (
    NearlineError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from nearline.providers.base import Capabilities, ProviderCall
from nearline.serving.events import Delta, Done, Event, FinishReason, Usage
from nearline.serving.request import ChatRequest

_FINISH_REASONS: set[str] = {"stop", "length", "content_filter", "tool_calls"}


def upstream_payload(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The request as the upstream should see it: nearline's extension removed, usage asked."""
    payload = request.model_dump(exclude_none=True, exclude={"nearline", "stream_options"})
    payload["model"] = upstream_model
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    return payload


class OpenAICompatProvider:
    def __init__(self, name: str, settings: HttpProviderSettings) -> None:
        self.name = name
        self.capabilities = Capabilities(tools=True)
        self._settings = settings
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=settings.read_timeout_s,
                write=settings.connect_timeout_s,
                pool=settings.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()

    def is_ready(self) -> bool:
        return not self._client.is_closed

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        payload = upstream_payload(call.request, call.upstream_model)
        timeout = None
        if call.deadline is not None:
            remaining = call.deadline.remaining()
            timeout = httpx.Timeout(
                connect=min(self._settings.connect_timeout_s, remaining),
                read=min(self._settings.read_timeout_s, remaining),
                write=min(self._settings.connect_timeout_s, remaining),
                pool=min(self._settings.connect_timeout_s, remaining),
            )
        try:
            request = self._client.build_request(
                "POST",
                "/chat/completions",
                content=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(self.name, response)
                async for event in _events_from_sse(self.name, response):
                    yield event
            finally:
                await response.aclose()  # the client left or we are done: close the connection
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"upstream {self.name!r} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"upstream {self.name!r} connection failed: {type(exc).__name__}: {exc}"
            ) from exc


def _status_error(name: str, response: httpx.Response) -> NearlineError:
    message = _upstream_message(response)
    status = response.status_code
    if status == 429:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return UpstreamRateLimited(
            f"upstream {name!r} rate limited: {message}", retry_after_s=retry_after
        )
    if status >= 500:
        return UpstreamError(f"upstream {name!r} answered {status}: {message}")
    if status in (408,):
        return UpstreamTimeout(f"upstream {name!r} answered {status}: {message}")
    return UpstreamRejected(f"upstream {name!r} rejected the request ({status}): {message}")


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
        message = body["error"]["message"]
        return str(message)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


async def _events_from_sse(name: str, response: httpx.Response) -> AsyncIterator[Event]:
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {name!r} sent a malformed chunk") from exc
        if "error" in chunk:
            raise UpstreamError(f"upstream {name!r} failed mid-stream: {chunk['error']}")
        if chunk.get("usage"):
            raw = chunk["usage"]
            details = raw.get("prompt_tokens_details") or {}
            usage = Usage(
                prompt_tokens=int(raw.get("prompt_tokens", 0)),
                completion_tokens=int(raw.get("completion_tokens", 0)),
                cached_tokens=int(details.get("cached_tokens") or 0),
            )
        for choice in chunk.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield Delta(text)
            reason = choice.get("finish_reason")
            if reason in _FINISH_REASONS:
                finish_reason = reason
    else:
        raise UpstreamError(f"upstream {name!r} ended the stream without [DONE]")
    if finish_reason is None:
        raise UpstreamError(f"upstream {name!r} ended the stream without a finish_reason")
    if usage is not None:
        yield usage
    yield Done(finish_reason)
