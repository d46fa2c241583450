"""The model catalogue: public model names, the providers behind them, and the router.

One ``Catalogue`` is built at start-up and shared by every handler (vLLM's
``OpenAIServingModels``). It resolves a request for a tenant — the model exists, the tenant
may use it, the model supports what the request asks — into a ``ProviderCall``, names the
provider a call goes to, and derives the other calls an answer may need (a draft).

Rights hold for every model a request touches. A tenant may use the models its key lists
and the ``public`` ones; through them, the providers those models are served by, and what
those reach (``reach``: a tier's fallbacks, a cascade's cheap, strong and verifier tiers).
A routed choice (a rule, a tier header, the learned router) outside that is refused with a
403 naming it; a draft from a model the tenant may not use is simply not made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Set
from dataclasses import replace

from nearline.config import ModelRoute
from nearline.core.errors import ModelNotFound, PermissionDenied, UnsupportedParameter
from nearline.core.events import Event
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest
from nearline.gateway.routing.rules import Router
from nearline.gateway.tenancy import Tenant

Reach = Callable[[str], Set[str]]
"""A provider name → the providers it may call (itself, or a tier's chain, a cascade's parts)."""


def _itself(name: str) -> Set[str]:
    return {name}


class Catalogue:
    def __init__(
        self,
        models: Mapping[str, ModelRoute],
        providers: Mapping[str, Provider],
        router: Router | None = None,
        *,
        reach: Reach = _itself,
    ) -> None:
        self._models = dict(models)
        self._providers = dict(providers)
        self._router = router
        self._reach = reach

    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def names_for(self, tenant: Tenant) -> list[str]:
        """The models ``tenant`` may use."""
        return [name for name in self.names if self.may_use(tenant, name)]

    def may_use(self, tenant: Tenant, model: str) -> bool:
        """Its key lists ``model`` (or lists no models), or the model is ``public``."""
        route = self._models.get(model)
        return route is not None and (route.public or tenant.may_use(model))

    def may_call(self, tenant: Tenant, provider: str) -> bool:
        """Everything ``provider`` may call is reached by a model ``tenant`` may use."""
        return not self._out_of_reach(tenant, provider)

    def _out_of_reach(self, tenant: Tenant, provider: str) -> set[str]:
        """What ``provider`` may call that no model ``tenant`` may use reaches."""
        if tenant.models is None:
            return set()
        permitted: set[str] = set()
        for name in self.names_for(tenant):
            permitted |= self._reach(self._models[name].provider)
        return set(self._reach(provider)) - permitted

    def permits(self, call: ProviderCall, tenant: Tenant) -> bool:
        """``tenant`` may have ``call`` answered: its model and the provider that answers."""
        return self.may_use(tenant, call.request.model) and self.may_call(
            tenant, self.provider_name(call)
        )

    def route(self, model: str) -> ModelRoute:
        return self._models[model]

    async def resolve(
        self, request: ChatRequest, tenant: Tenant, headers: Mapping[str, str] | None = None
    ) -> ProviderCall:
        """Check the request against the catalogue and the tenant's rights; name its provider."""
        route = self._models.get(request.model)
        if route is None:
            raise ModelNotFound(
                f"the model {request.model!r} does not exist; available: "
                + ", ".join(self.names_for(tenant)),
                param="model",
            )
        if not self.may_use(tenant, request.model):
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
        chosen = await self._router.choose(call, headers or {})
        refused = set() if chosen is None else self._out_of_reach(tenant, chosen)
        if refused:
            parts = "" if refused == {chosen} else f" (it calls {', '.join(sorted(refused))})"
            raise PermissionDenied(
                f"this API key may not use the tier {chosen!r}{parts} that routing chose for "
                f"the model {request.model!r}",
                param="model",
            )
        return replace(call, provider=chosen)

    def provider_name(self, call: ProviderCall) -> str:
        """The provider that answers ``call``: the router's choice, else the model's."""
        return call.provider or self._models[call.request.model].provider

    def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        """``call``'s answer from its provider, as the provider streams it."""
        return self._providers[self.provider_name(call)].stream(call)

    def draft_call(
        self, call: ProviderCall, tenant: Tenant, model: str, max_tokens: int
    ) -> ProviderCall | None:
        """``call`` asked of the light ``model`` for a quick draft, or ``None`` when there is
        no such model, ``tenant`` may not use it, or it is the provider that gives the
        refined answer anyway."""
        route = self._models.get(model)
        if (
            route is None
            or not self.may_use(tenant, model)
            or route.provider == self.provider_name(call)
        ):
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
