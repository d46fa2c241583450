"""An upstream that speaks Anthropic's Messages API (``providers.<name>.format: anthropic``).

``POST {base_url}/messages`` with ``x-api-key`` and ``anthropic-version`` headers (and the
call's W3C ``traceparent``), always streamed. The request is translated once
(:mod:`anthropic_payload`); Anthropic's SSE events become nearline's: ``text_delta`` →
``Delta``, a ``tool_use`` block's start → the first ``ToolCallDelta`` of a call (its id and
name), its ``input_json_delta`` fragments → more of its arguments; ``message_start`` and
``message_delta`` give the usage (``cache_read_input_tokens`` as cached tokens) and the
stop reason (``tool_use`` → ``tool_calls``, ``max_tokens`` → ``length``). An ``error``
event, a stream that ends before ``message_stop`` and the upstream's status codes are
translated into nearline's error tree as for OpenAI-compatible upstreams (timeout → 504,
5xx/529/reset → 502, 429 → 429 with Retry-After, other 4xx → 400).

``count_tokens`` asks the upstream's ``/messages/count_tokens`` (free at Anthropic).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from nearline.gateway.providers.anthropic_payload import (
    STOP_REASONS,
    anthropic_payload,
    refuse_unsupported,
)
from nearline.gateway.providers.http_upstream import HttpUpstream
from nearline.gateway.telemetry.tracing import propagation_headers


class AnthropicProvider(HttpUpstream):
    def __init__(self, name: str, settings: HttpProviderSettings) -> None:
        super().__init__(name, settings)
        self.capabilities = Capabilities(tools=True)
        self._base = settings.base_url.rstrip("/")
        self._headers = {
            "Content-Type": "application/json",
            "anthropic-version": settings.anthropic_version,
        }
        if settings.api_key is not None:
            self._headers["x-api-key"] = settings.api_key.get_secret_value()

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        refuse_unsupported(call.request, self.name)
        body = orjson.dumps(anthropic_payload(call.request, call.upstream_model))
        remaining = None if call.deadline is None else call.deadline.remaining()
        try:
            async with self._ensure_session().post(
                f"{self._base}/messages",
                data=body,
                headers=self._headers | propagation_headers(),
                timeout=self._timeout(remaining),
            ) as response:
                finished = False
                try:
                    if response.status >= 400:
                        raise await _status_error(self.name, response)
                    async for event in _events(self.name, response):
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

    async def count_tokens(self, payload: dict[str, Any], upstream_model: str) -> int:
        """The input tokens of a Messages request body (model, messages, system, tools)."""
        body = orjson.dumps({**payload, "model": upstream_model})
        try:
            async with self._ensure_session().post(
                f"{self._base}/messages/count_tokens",
                data=body,
                headers=self._headers | propagation_headers(),
            ) as response:
                if response.status >= 400:
                    raise await _status_error(self.name, response)
                answer = orjson.loads(await response.read())
                return int(answer["input_tokens"])
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out counting tokens") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream {self.name!r} connection failed: {exc}") from exc
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"upstream {self.name!r} sent a malformed count") from exc


async def _status_error(name: str, response: aiohttp.ClientResponse) -> NearlineError:
    content = await response.read()
    try:
        message = str(orjson.loads(content)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = content[:200].decode(errors="replace") or (response.reason or "")
    status = response.status
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        try:
            seconds = None if retry_after is None else float(retry_after)
        except ValueError:
            seconds = None
        return UpstreamRateLimited(
            f"upstream {name!r} rate limited: {message}", retry_after_s=seconds
        )
    if status >= 500:  # 529: Anthropic is overloaded
        return UpstreamError(f"upstream {name!r} answered {status}: {message}")
    if status == 408:
        return UpstreamTimeout(f"upstream {name!r} answered {status}: {message}")
    return UpstreamRejected(f"upstream {name!r} rejected the request ({status}): {message}")


async def _sse_events(name: str, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON ``data`` of each SSE event (its ``type`` names it, as the ``event`` line)."""
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        try:
            data = orjson.loads(line[5:].strip())
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {name!r} sent a malformed event") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"upstream {name!r} sent an event that is not an object")
        yield data


async def _events(name: str, response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    prompt_tokens = cached_tokens = completion_tokens = 0
    reason: FinishReason = "stop"
    response_id: str | None = None
    response_model: str | None = None
    calls: dict[int, int] = {}  # content block index → tool call index
    async for data in _sse_events(name, response):
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            response_id = message.get("id")
            response_model = message.get("model")
            usage = message.get("usage") or {}
            # Anthropic's input_tokens leave out what was read from or written to its cache
            prompt_tokens = int(usage.get("input_tokens") or 0) + int(
                usage.get("cache_creation_input_tokens") or 0
            )
            cached_tokens = int(usage.get("cache_read_input_tokens") or 0)
            completion_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = calls[int(data.get("index") or 0)] = len(calls)
                yield ToolCallDelta(index, id=str(block.get("id")), name=str(block.get("name")))
            elif block.get("type") == "text" and block.get("text"):
                yield Delta(str(block["text"]))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield Delta(str(delta["text"]))
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                block_index = int(data.get("index") or 0)
                if block_index in calls:
                    yield ToolCallDelta(calls[block_index], arguments=str(delta["partial_json"]))
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            reason = STOP_REASONS.get(str(stop), "stop")
            usage = data.get("usage") or {}
            completion_tokens = int(usage.get("output_tokens") or completion_tokens)
            if usage.get("input_tokens") is not None:  # recent streams repeat the input here
                prompt_tokens = int(usage["input_tokens"]) + int(
                    usage.get("cache_creation_input_tokens") or 0
                )
        elif kind == "message_stop":
            yield Usage(prompt_tokens + cached_tokens, completion_tokens, cached_tokens)
            yield Done(reason, response_id=response_id, response_model=response_model)
            return
        elif kind == "error":
            raise UpstreamError(f"upstream {name!r} failed mid-stream: {data.get('error')}")
    raise UpstreamError(f"upstream {name!r} ended the stream before message_stop")
