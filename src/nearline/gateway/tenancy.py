"""Tenants and API keys: every request carries the tenant it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from nearline.config import AuthSettings, hash_api_key
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
