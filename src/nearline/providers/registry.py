"""Build the providers the model catalogue names, once, at start-up."""

from __future__ import annotations

from nearline.config import LOCAL_PROVIDER, Settings
from nearline.providers.base import Provider
from nearline.providers.openai_compat import OpenAICompatProvider


def build_providers(settings: Settings) -> dict[str, Provider]:
    used = {route.provider for route in settings.models.values()}
    providers: dict[str, Provider] = {}
    if LOCAL_PROVIDER in used:
        from nearline.providers.local import LocalProvider  # imports llama.cpp only when used

        providers[LOCAL_PROVIDER] = LocalProvider(settings.local)
    for name, provider_settings in settings.providers.items():
        if name in used:
            providers[name] = OpenAICompatProvider(name, provider_settings)
    return providers
