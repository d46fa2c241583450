"""The model catalogue: public model names, the providers behind them, and the router.

One ``Catalogue`` is built at start-up and shared by every handler (vLLM's
``OpenAIServingModels``). It resolves a request for a tenant — the model exists, the tenant
may use it, the model supports what the request asks — into a ``ProviderCall``, names the
provider a call goes to, and derives the other calls an answer may need (a draft).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from nearline.config import ModelRoute
from nearline.core.errors import ModelNotFound, PermissionDenied, UnsupportedParameter
from nearline.core.events import Event
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.routing.rules import Router
from nearline.gateway.tenancy import Tenant


class Catalogue:
    def __init__(
        self,
        models: Mapping[str, ModelRoute],
        providers: Mapping[str, Provider],
        router: Router | None = None,
    ) -> None:
        self._models = dict(models)
        self._providers = dict(providers)
        self._router = router

    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def names_for(self, tenant: Tenant) -> list[str]:
        """The models ``tenant`` may use."""
        return [name for name in self.names if tenant.may_use(name)]

    def route(self, model: str) -> ModelRoute:
        return self._models[model]

    async def resolve(
        self, request: ChatRequest, tenant: Tenant, headers: Mapping[str, str] | None = None
    ) -> ProviderCall:
        """Check the request against the catalogue and the tenant's rights; name its provider."""
        route = self._models.get(request.model)
        if route is None:
            raise ModelNotFound(
                f"the model {request.model!r} does not exist; available: " + ", ".join(self.names),
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
        call = ProviderCall(
            request=request,
            upstream_model=route.upstream_model or request.model,
            tenant=tenant.name,
        )
        if self._router is None:
            return call
        return replace(call, provider=await self._router.choose(call, headers or {}))

    def provider_name(self, call: ProviderCall) -> str:
        """The provider that answers ``call``: the router's choice, else the model's."""
        return call.provider or self._models[call.request.model].provider

    def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        """``call``'s answer from its provider, as the provider streams it."""
        return self._providers[self.provider_name(call)].stream(call)

    def draft_call(self, call: ProviderCall, model: str, max_tokens: int) -> ProviderCall | None:
        """``call`` asked of the light ``model`` for a quick draft, or ``None`` when there is
        no such model or it is the provider that gives the refined answer anyway."""
        route = self._models.get(model)
        if route is None or route.provider == self.provider_name(call):
            return None
        request = call.request.model_copy(
            update={
                "model": model,
                "max_tokens": max_tokens,
                "max_completion_tokens": None,
                "stream": True,
            }
        )
        return ProviderCall(
            request=request,
            upstream_model=route.upstream_model or model,
            tenant=call.tenant,
            deadline=call.deadline,
        )
