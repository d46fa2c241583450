"""API keys made through ``/admin/keys`` (docs/keys.md): stored hashed in SQLite or
PostgreSQL, followed by every replica; and the spend ledger beside them."""

from __future__ import annotations

from nearline.gateway.keys.manager import KeyManager, build_key_manager
from nearline.gateway.keys.store import KeyRecord, KeyStore, SpendRow

__all__ = ["KeyManager", "KeyRecord", "KeyStore", "SpendRow", "build_key_manager"]
