"""Whether a request may be answered from cache and whether its answer may be stored.

Three voices, the strictest wins: the client's ``Cache-Control`` header, the body extension
``"nearline": {"cache": ...}``, and the model's configured policy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nearline.config import ModelRoute
from nearline.core.provider import ProviderCall
from nearline.core.request import ChatRequest


@dataclass(frozen=True, slots=True)
class CacheDirective:
    lookup: bool = True
    store: bool = True
    only_if_cached: bool = False  # answer from a cache tier or not at all (504)

    def also(self, other: CacheDirective) -> CacheDirective:
        return CacheDirective(
            self.lookup and other.lookup,
            self.store and other.store,
            self.only_if_cached or other.only_if_cached,
        )


NO_CACHE = CacheDirective(lookup=False, store=True)  # revalidate: skip lookup, refresh entry
NO_STORE = CacheDirective(lookup=False, store=False)


def from_header(cache_control: str | None) -> CacheDirective:
    if not cache_control:
        return CacheDirective()
    directives = {part.strip().lower() for part in cache_control.split(",")}
    if "no-store" in directives:
        return NO_STORE
    if "no-cache" in directives or "max-age=0" in directives:
        return NO_CACHE
    if "only-if-cached" in directives:
        return CacheDirective(only_if_cached=True)
    return CacheDirective()


def from_request(request: ChatRequest) -> CacheDirective:
    if request.nearline.cache == "no-store":
        return NO_STORE
    if request.nearline.cache == "no-cache":
        return NO_CACHE
    return CacheDirective()


def from_model(route: ModelRoute, request: ChatRequest) -> CacheDirective:
    if route.cache == "never":
        return NO_STORE
    if route.cache == "deterministic":
        deterministic = request.temperature == 0 or request.seed is not None
        return CacheDirective() if deterministic else NO_STORE
    return CacheDirective()


def carried(call: ProviderCall, directive: CacheDirective) -> ProviderCall:
    """``call`` with ``directive`` written into its body extension (``nearline.cache``), so
    a provider that makes calls of its own (a plan's steps) follows the client's
    ``Cache-Control`` too. The extension never reaches an upstream."""
    said = call.request.nearline.cache
    wanted = "no-store" if not directive.store else "no-cache" if not directive.lookup else said
    if said in (wanted, "no-store"):
        return call
    nearline = call.request.nearline.model_copy(update={"cache": wanted})
    return replace(call, request=call.request.model_copy(update={"nearline": nearline}))
