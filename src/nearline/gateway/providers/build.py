"""Build the providers the model catalogue names, once, at start-up.

A model may name a plain provider, a tier, a cascade or a plan (``plan:<name>``, see
``routing:``); tiers, cascades and plans are providers too, built over the plain providers
their deployments name. An HTTP provider speaks OpenAI's wire format, or Anthropic's with
``format: anthropic``.
"""

from __future__ import annotations

from nearline.config import LOCAL_PROVIDER, Settings
from nearline.core.provider import Provider
from nearline.gateway.providers.anthropic import AnthropicProvider
from nearline.gateway.providers.openai_compat import OpenAICompatProvider
from nearline.gateway.routing.build import build_routing
from nearline.gateway.routing.telemetry import RoutingCounters, RoutingTelemetry


def build_providers(
    settings: Settings, routing_telemetry: RoutingTelemetry | None = None
) -> dict[str, Provider]:
    routing = settings.routing
    used = {route.provider for route in settings.models.values()} | routing.chosen_names
    for tier in routing.tiers_needed_by(used):
        used |= {deployment.provider for deployment in routing.tiers[tier].deployments}
    providers: dict[str, Provider] = {}
    if LOCAL_PROVIDER in used:
        from nearline.gateway.providers.local import (
            LocalProvider,  # imports llama.cpp only when used
        )

        providers[LOCAL_PROVIDER] = LocalProvider(settings.local)
    for name, provider_settings in settings.providers.items():
        if name in used:
            providers[name] = (
                AnthropicProvider(name, provider_settings)
                if provider_settings.format == "anthropic"
                else OpenAICompatProvider(name, provider_settings)
            )
    telemetry = routing_telemetry if routing_telemetry is not None else RoutingCounters()
    providers.update(build_routing(routing, used, providers, telemetry))
    return providers
