"""The SSE encoder and the JSON collector, in-process: events in, OpenAI wire shapes out.

The end-to-end checks of the same contract (the official ``openai`` client joining deltas,
``finish_reason`` once, usage last) are in ``tests/gateway/test_openai_sdk.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest

from nearline.core.errors import UpstreamError, UpstreamTimeout
from nearline.core.events import (
    Delta,
    Done,
    ErrorEvent,
    Event,
    Preliminary,
    Replace,
    Usage,
    collect,
)
from nearline.gateway.serving.sse import DONE_FRAME, ChunkEncoder, collect_body


def frames(data: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE byte stream, in order (comments kept as-is)."""
    blocks = [block for block in data.decode().split("\n\n") if block]
    return [block.removeprefix("data: ") for block in blocks]


def chunks(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in frames(data) if f.startswith("{")]


def encode(encoder: ChunkEncoder, events: Iterable[Event]) -> bytes:
    return encoder.opening() + b"".join(encoder.encode(event) for event in events)


ANSWER: list[Event] = [Delta("Hello"), Delta(", world"), Usage(5, 2, cached_tokens=1), Done()]


def test_the_opening_chunk_carries_the_role_and_the_extension():
    encoder = ChunkEncoder(model="m", include_usage=False, extension={"source": "exact"})
    [opening] = chunks(encoder.opening())
    assert opening["object"] == "chat.completion.chunk"
    assert opening["model"] == "m"
    assert opening["id"] == encoder.completion_id
    assert opening["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert opening["nearline"] == {"source": "exact"}
    plain = chunks(ChunkEncoder(model="m", include_usage=False).opening())[0]
    assert "nearline" not in plain


def test_deltas_in_order_one_finish_reason_and_done_last():
    encoder = ChunkEncoder(model="m", include_usage=False)
    data = encode(encoder, ANSWER)
    assert data.endswith(DONE_FRAME)
    assert frames(data).count("[DONE]") == 1
    body = chunks(data)
    assert {c["id"] for c in body} == {encoder.completion_id}
    texts = [c["choices"][0]["delta"].get("content") for c in body[1:] if c["choices"]]
    assert "".join(t for t in texts if t) == "Hello, world"
    reasons = [c["choices"][0]["finish_reason"] for c in body if c["choices"]]
    assert [r for r in reasons if r is not None] == ["stop"]
    assert reasons[-1] == "stop"  # the finish chunk is the last choice chunk
    assert all("usage" not in c for c in body)  # not asked for


def test_the_usage_chunk_comes_last_when_asked_for():
    body = chunks(encode(ChunkEncoder(model="m", include_usage=True), ANSWER))
    last = body[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    assert all("usage" not in c for c in body[:-1])
    assert body[-2]["choices"][0]["finish_reason"] == "stop"


def test_no_usage_chunk_when_the_provider_reported_none():
    events: list[Event] = [Delta("x"), Done("length")]
    body = chunks(encode(ChunkEncoder(model="m", include_usage=True), events))
    assert all("usage" not in c for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "length"


def test_an_error_after_the_start_is_an_openai_error_frame_then_done():
    events: list[Event] = [Delta("partial"), ErrorEvent(UpstreamError("the upstream hung up"))]
    data = encode(ChunkEncoder(model="m", include_usage=True), events)
    assert data.endswith(DONE_FRAME)
    assert frames(data).count("[DONE]") == 1
    body = chunks(data)
    assert body[-1] == {
        "error": {
            "message": "the upstream model failed",  # the details are the log's (issue 13)
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    reasons = [c["choices"][0]["finish_reason"] for c in body if c.get("choices")]
    assert all(r is None for r in reasons)  # an error never pretends the answer finished


def test_progressive_events_are_sse_comments_plain_clients_skip():
    encoder = ChunkEncoder(model="m", include_usage=False)
    draft = encoder.encode(Preliminary("rough", source="draft", similarity=None))
    assert draft.startswith(b": nearline ")
    assert orjson.loads(draft.removeprefix(b": nearline ")) == {
        "type": "preliminary",
        "text": "rough",
        "source": "draft",
        "similarity": None,
    }
    assert (
        encoder.encode(Replace("confirm"))
        == b': nearline {"type":"replace","action":"confirm"}\n\n'
    )


async def stream(events: Iterable[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


class Closing:
    """An event stream that records whether it was closed."""

    def __init__(self, events: Iterable[Event]) -> None:
        self._events = iter(events)
        self.closed = False

    def __aiter__(self) -> Closing:
        return self

    async def __anext__(self) -> Event:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


async def test_collect_joins_the_text_and_keeps_finish_reason_and_usage():
    answer = await collect(stream([Delta("a"), Delta("b"), Usage(3, 2), Done("length")]))
    assert answer.text == "ab"
    assert answer.finish_reason == "length"
    assert answer.usage == Usage(3, 2)


async def test_collect_raises_the_error_event_and_closes_the_stream():
    error = UpstreamTimeout("no first token in time")
    events = Closing([Delta("a"), ErrorEvent(error)])
    with pytest.raises(UpstreamTimeout) as raised:
        await collect(events)
    assert raised.value is error
    assert events.closed


async def test_collect_refuses_a_stream_that_never_finishes():
    events = Closing([Delta("a")])
    with pytest.raises(UpstreamError, match="without finishing"):
        await collect(events)
    assert events.closed


async def test_collect_body_is_a_chat_completion():
    body = await collect_body("m", stream(ANSWER))
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"]["total_tokens"] == 7
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 1}
    assert "nearline" not in body


async def test_collect_body_without_usage_reports_zeros():
    body = await collect_body("m", stream([Delta("x"), Done()]))
    assert body["usage"]["total_tokens"] == 0


async def test_collect_body_carries_the_extension_and_the_last_preliminary():
    events: list[Event] = [
        Preliminary("draft", source="semantic-near", similarity=0.91),
        Replace("replace"),
        Delta("refined"),
        Done(),
    ]
    body = await collect_body("m", stream(events), {"source": "inference", "similarity": None})
    assert body["nearline"] == {
        "source": "inference",
        "similarity": None,
        "preliminary": {
            "type": "preliminary",
            "text": "draft",
            "source": "semantic-near",
            "similarity": 0.91,
            "action": "replace",
        },
    }
    assert body["choices"][0]["message"]["content"] == "refined"


async def test_collect_body_raises_an_error_event():
    with pytest.raises(UpstreamError):
        await collect_body("m", stream([Delta("x"), ErrorEvent(UpstreamError("cut"))]))
