"""The serving pipeline: the one place that decides how a request is answered.

Today it resolves the public model name to a provider and streams that provider's events;
the cache tiers, progressive answers and routing plug in here, in front of the provider
call, and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass

from nearline.config import ModelRoute
from nearline.errors import (
    InvalidRequest,
    ModelNotFound,
    NearlineError,
    PermissionDenied,
    UnsupportedParameter,
)
from nearline.providers.base import Provider, ProviderCall
from nearline.serving.events import Done, ErrorEvent, Event
from nearline.serving.request import ChatRequest
from nearline.tenancy import Tenant


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer whose first event has already arrived (so errors before it are HTTP errors)."""

    first: Event
    rest: AsyncGenerator[Event, None]

    async def events(self) -> AsyncIterator[Event]:
        yield self.first
        async for event in self.rest:
            yield event

    async def aclose(self) -> None:
        await self.rest.aclose()


class ServingPipeline:
    def __init__(self, models: Mapping[str, ModelRoute], providers: Mapping[str, Provider]) -> None:
        self._models = dict(models)
        self._providers = dict(providers)

    @property
    def model_names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, request: ChatRequest, tenant: Tenant) -> ProviderCall:
        """Check the request against the catalogue and the tenant's rights; name its provider."""
        route = self._models.get(request.model)
        if route is None:
            raise ModelNotFound(
                f"the model {request.model!r} does not exist; available: "
                + ", ".join(self.model_names),
                param="model",
            )
        if not tenant.may_use(request.model):
            raise PermissionDenied(
                f"this API key may not use the model {request.model!r}", param="model"
            )
        if request.wants_tools and not route.supports_tools:
            raise UnsupportedParameter(
                f"the model {request.model!r} does not support tools", param="tools"
            )
        return ProviderCall(
            request=request,
            upstream_model=route.upstream_model or request.model,
            tenant=tenant.name,
            deadline=None,
        )

    def provider_for(self, call: ProviderCall) -> Provider:
        return self._providers[self._models[call.request.model].provider]

    async def answer(self, call: ProviderCall) -> Answer:
        """Start answering; raise ``NearlineError`` if it fails before the first event."""
        provider = self.provider_for(call)
        events = _guarded(provider.stream(call))
        try:
            first = await anext(events)
        except StopAsyncIteration as exc:
            raise InvalidRequest("the provider produced no answer") from exc
        if isinstance(first, ErrorEvent):
            await events.aclose()
            raise first.error
        return Answer(first=first, rest=events)


async def _guarded(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """Turn a provider failure into an ``ErrorEvent``; nothing follows ``Done`` or an error."""
    try:
        async for event in events:
            yield event
            if isinstance(event, Done):
                return
    except NearlineError as error:
        yield ErrorEvent(error)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
