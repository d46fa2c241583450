"""Tenants and API keys: every request carries the tenant it belongs to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nearline.config import AuthSettings, KeyLimits, Settings, is_loopback
from nearline.core.errors import AuthenticationFailed

# the key scheme lives in nearline.core.keys, where the worker finds it too; re-exported here
from nearline.core.keys import bearer_key, hash_api_key, holds_key

ANONYMOUS_TENANT = "local"


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    models: frozenset[str] | None = None  # None: any model
    key_id: str | None = None  # the key presented (None: auth off)
    limits: KeyLimits | None = None  # the key's own rate limits and budget

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


def config_key_id(sha256: str) -> str:
    """The id of a key written in the config file (its digest's first 16 hex digits)."""
    return f"cfg-{sha256[:16]}"


class KeyRing:
    """Maps presented API keys (compared by SHA-256 digest) to tenants: the config file's
    keys, and the key store's (``gateway/keys``), which ``replace_stored`` swaps at once."""

    def __init__(self, settings: AuthSettings) -> None:
        self._by_digest = {
            key.sha256: Tenant(
                key.tenant,
                frozenset(key.models) if key.models else None,
                key_id=config_key_id(key.sha256),
                limits=key.limits if key.limits.any else None,
            )
            for key in settings.keys
        }
        self._stored: Mapping[str, Tenant] = {}
        self._store_has_keys = False

    def replace_stored(self, by_digest: Mapping[str, Tenant], *, any_keys: bool) -> None:
        """The key store's live keys, by SHA-256 digest (one swap: no request sees half).
        ``any_keys``: the store holds keys, revoked ones included — auth stays on when the
        last key is revoked."""
        self._stored = by_digest
        self._store_has_keys = any_keys or bool(by_digest)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest) or self._store_has_keys

    def tenant_for(self, authorization: str | None) -> Tenant:
        if not self.enabled:
            return Tenant(ANONYMOUS_TENANT)
        if not authorization:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        key = bearer_key(authorization)
        if key is None:
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
        digest = hash_api_key(key)
        # keyed by digest: no secret is compared here
        tenant = self._by_digest.get(digest) or self._stored.get(digest)
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


__all__ = [
    "ANONYMOUS_TENANT",
    "KeyRing",
    "Tenant",
    "admin_required",
    "bearer_key",
    "config_key_id",
    "hash_api_key",
    "holds_key",
    "metrics_protected",
]
