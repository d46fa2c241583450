"""Tenants and API keys: every request carries the tenant it belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nearline.config import AuthSettings, Settings, hash_api_key, is_loopback
from nearline.core.errors import AuthenticationFailed

ANONYMOUS_TENANT = "local"


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; ``None`` if absent or malformed."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    models: frozenset[str] | None = None  # None: any model

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


class KeyRing:
    """Maps presented API keys (compared by SHA-256 digest) to tenants."""

    def __init__(self, settings: AuthSettings) -> None:
        self._by_digest = {
            key.sha256: Tenant(key.tenant, frozenset(key.models) if key.models else None)
            for key in settings.keys
        }

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def tenant_for(self, authorization: str | None) -> Tenant:
        if not self.enabled:
            return Tenant(ANONYMOUS_TENANT)
        if not authorization:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        key = bearer_key(authorization)
        if key is None:
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
        digest = hash_api_key(key)
        tenant = self._by_digest.get(digest)  # keyed by digest: no secret is compared here
        if tenant is None:
            raise AuthenticationFailed("invalid API key")
        return tenant


def admin_required(settings: Settings) -> bool:
    """Admin calls need an admin key: when admin keys or tenant keys are configured, or the
    bind is not loopback (open only with auth off on loopback)."""
    return bool(
        settings.auth.admin_keys or settings.auth.keys or not is_loopback(settings.server.host)
    )


def metrics_protected(settings: Settings) -> bool:
    """``/metrics`` and the dashboard's data need a metrics or admin key: whenever admin
    calls need one or metrics keys are configured, unless ``auth.public_metrics``."""
    if settings.auth.public_metrics:
        return False
    return admin_required(settings) or bool(settings.auth.metrics_keys)


def holds_key(authorization: str | None, digests: Iterable[str]) -> bool:
    """The ``Authorization`` header presents a key whose SHA-256 digest is in ``digests``."""
    key = bearer_key(authorization)
    return key is not None and hash_api_key(key) in set(digests)
