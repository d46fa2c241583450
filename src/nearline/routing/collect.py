"""Read a whole answer from an event stream (cascades judge it; plans chain it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from nearline.errors import UpstreamError
from nearline.providers.base import Provider, ProviderCall
from nearline.serving.events import Delta, Done, ErrorEvent, Event, FinishReason, Usage
from nearline.serving.request import ChatRequest, Message


@dataclass(frozen=True, slots=True)
class CollectedAnswer:
    text: str
    finish_reason: FinishReason
    usage: Usage | None
    events: tuple[Event, ...]


async def collect(events: AsyncIterator[Event]) -> CollectedAnswer:
    """The answer's text, finish reason and usage; an ``ErrorEvent`` is raised."""
    seen: list[Event] = []
    parts: list[str] = []
    usage: Usage | None = None
    try:
        async for event in events:
            seen.append(event)
            match event:
                case Delta(text=text):
                    parts.append(text)
                case Usage():
                    usage = event
                case Done(finish_reason=reason):
                    return CollectedAnswer("".join(parts), reason, usage, tuple(seen))
                case ErrorEvent(error=error):
                    raise error
                case _:
                    pass
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    raise UpstreamError("the answer ended without finishing")


def prompt_call(
    template: ProviderCall, upstream_model: str, messages: list[Message], max_tokens: int | None
) -> ProviderCall:
    """A new call for the same tenant and deadline, with other messages."""
    request = ChatRequest(
        model=template.request.model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=template.request.temperature,
        seed=template.request.seed,
    )
    return ProviderCall(
        request=request,
        upstream_model=upstream_model,
        tenant=template.tenant,
        deadline=template.deadline,
    )


async def ask(provider: Provider, call: ProviderCall) -> CollectedAnswer:
    return await collect(provider.stream(call))
