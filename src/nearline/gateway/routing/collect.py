"""Read a whole answer from an event stream (cascades judge it; plans chain it)."""

from __future__ import annotations

from nearline.core.events import CollectedAnswer, collect
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest, Message


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
