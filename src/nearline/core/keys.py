"""API keys as the gateway and the worker check them: SHA-256 digests, ``Bearer`` headers.

Configuration stores only a key's SHA-256 hex digest; a presented key is hashed and looked up
by digest, so no secret is ever compared or kept in memory as configured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest configuration stores for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; ``None`` if absent or malformed."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def holds_key(authorization: str | None, digests: Iterable[str]) -> bool:
    """The ``Authorization`` header presents a key whose SHA-256 digest is in ``digests``."""
    key = bearer_key(authorization)
    return key is not None and hash_api_key(key) in set(digests)


__all__ = ["bearer_key", "hash_api_key", "holds_key"]
