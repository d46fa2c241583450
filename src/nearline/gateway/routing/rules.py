"""Rules on request metadata → a tier. The first rule whose conditions all hold wins.

``Router.choose(call, headers)`` is the one question the serving pipeline asks: which tier
(or cascade) should answer this call, or ``None`` to keep the model's configured provider.
Rules are checked first; an optional learned policy (``LearnedPolicy``) answers when no
rule matched. Choosing is async: the learned policy embeds the prompt (milliseconds of CPU),
which runs on a thread of its own, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from nearline.config.routing import RuleConditions, RuleSettings
from nearline.core.provider import ProviderCall
from nearline.core.threads import DedicatedThread

OPENAI_DEFAULT_TEMPERATURE = 1.0  # what an unset temperature means to an OpenAI-style server


def prompt_text(call: ProviderCall) -> str:
    return "\n".join(message.text for message in call.request.messages)


def matches(when: RuleConditions, call: ProviderCall, headers: Mapping[str, str]) -> bool:
    """Do all the given conditions hold for this call? (Unset conditions are ignored.)"""
    request = call.request
    lowered = {name.lower(): value for name, value in headers.items()}
    if any(lowered.get(name.lower()) != value for name, value in when.headers.items()):
        return False
    if when.models is not None and request.model not in when.models:
        return False
    if when.tenants is not None and call.tenant not in when.tenants:
        return False
    if when.tools is not None and request.wants_tools != when.tools:
        return False
    if when.stream is not None and request.stream != when.stream:
        return False
    if when.min_prompt_chars is not None or when.max_prompt_chars is not None:
        length = len(prompt_text(call))
        if when.min_prompt_chars is not None and length < when.min_prompt_chars:
            return False
        if when.max_prompt_chars is not None and length > when.max_prompt_chars:
            return False
    if when.min_max_tokens is not None and (request.max_output_tokens or 0) < when.min_max_tokens:
        return False
    temperature = OPENAI_DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
    return when.max_temperature is None or temperature <= when.max_temperature


class RoutingPolicy(Protocol):
    async def choose(self, call: ProviderCall, headers: Mapping[str, str]) -> str | None: ...

    async def aclose(self) -> None: ...


class RulePolicy:
    def __init__(self, rules: Sequence[RuleSettings]) -> None:
        self._rules = list(rules)

    async def choose(self, call: ProviderCall, headers: Mapping[str, str]) -> str | None:
        for rule in self._rules:
            if matches(rule.when, call, headers):
                return rule.tier
        return None

    async def aclose(self) -> None:
        pass


class StrongClassifier(Protocol):
    """What ``LearnedRouter`` (``gateway/routing/learned.py``) offers."""

    def needs_strong(self, query: str, threshold: float | None = None) -> bool: ...


class LearnedPolicy:
    """Ask a classifier whether the strong tier is needed; answer ``strong`` or ``weak``."""

    def __init__(
        self,
        classifier: StrongClassifier,
        strong: str,
        weak: str,
        threshold: float | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self._classifier = classifier
        self._strong = strong
        self._weak = weak
        self._threshold = threshold
        self._models = None if models is None else set(models)
        # One thread: the embedding model is CPU-bound, and calls in parallel only share cores.
        self._thread = DedicatedThread("nearline-router")

    async def choose(self, call: ProviderCall, headers: Mapping[str, str]) -> str | None:
        if self._models is not None and call.request.model not in self._models:
            return None
        user_text = "\n".join(m.text for m in call.request.messages if m.role == "user")
        strong = await self._thread.run(self._classifier.needs_strong, user_text, self._threshold)
        return self._strong if strong else self._weak

    async def aclose(self) -> None:
        await self._thread.aclose()


class Router:
    """Policies in order; the first that names a tier decides."""

    def __init__(self, policies: Sequence[RoutingPolicy]) -> None:
        self._policies = list(policies)

    async def choose(self, call: ProviderCall, headers: Mapping[str, str]) -> str | None:
        for policy in self._policies:
            tier = await policy.choose(call, headers)
            if tier is not None:
                return tier
        return None

    async def aclose(self) -> None:
        for policy in self._policies:
            await policy.aclose()
