"""Keys made through the admin API, live on every replica; and the spend ledger.

``KeyManager`` owns the key store: it creates, updates, revokes and rotates keys (a new key
is returned once; only its SHA-256 digest is stored), and keeps the ``KeyRing`` in step with
the store: every ``poll_interval_s`` it reads the store's change counter, one integer, and
reloads the live keys when it moved — so a revoked key is refused by every replica within
that interval (0.25 s by default). Spend is summed per minute in memory and written to the
ledger every second, off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from nearline.config import KeyLimits, Settings, hash_api_key
from nearline.core.events import Usage
from nearline.core.tasks import BackgroundTasks
from nearline.gateway.keys.db import Database, PostgresDatabase, SqliteDatabase
from nearline.gateway.keys.store import KeyRecord, KeyStore, SpendRow
from nearline.gateway.limits.window import period_label, period_start
from nearline.gateway.tenancy import KeyRing, Tenant

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-nl-"
LEDGER_FLUSH_S = 1.0

_SpendKey = tuple[float, str, str, str]  # minute, tenant, key id, model


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def store_path(settings: Settings) -> Path:
    return settings.auth.store.sqlite_path or settings.request_log.sqlite_path.with_name(
        "keys.sqlite"
    )


def build_key_manager(settings: Settings, keyring: KeyRing) -> KeyManager:
    """PostgreSQL with ``auth.store.postgres_dsn``, else SQLite beside the request log."""
    config = settings.auth.store
    db: Database = (
        PostgresDatabase(config.postgres_dsn)
        if config.postgres_dsn
        else SqliteDatabase(store_path(settings))
    )
    return KeyManager(KeyStore(db), keyring, poll_interval_s=config.poll_interval_s)


class KeyManager:
    def __init__(self, store: KeyStore, keyring: KeyRing, *, poll_interval_s: float) -> None:
        self.store = store
        self._keyring = keyring
        self._poll_s = poll_interval_s
        self._version: int | None = None
        self._pending: defaultdict[_SpendKey, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        self._tasks = BackgroundTasks("nearline-keys")
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.store.open()
        await self.reload()
        self._tasks.start(self._follow())

    async def aclose(self) -> None:
        await self._tasks.aclose()
        with contextlib.suppress(*self.store.db.errors):
            await self.flush_spend()
        await self.store.db.aclose()

    # --- following the store ------------------------------------------------------------

    async def reload(self, *, force: bool = False) -> None:
        """Swap in the store's live keys if its change counter moved (or ``force``)."""
        async with self._reload_lock:
            version = await self.store.version()
            if version == self._version and not force:
                return
            every = await self.store.keys()
            self._keyring.replace_stored(
                {r.sha256: _tenant(r) for r in every if r.revoked_ts is None},
                any_keys=bool(every),
            )
            self._version = version

    async def _follow(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.reload()
                if time.monotonic() - last_flush >= LEDGER_FLUSH_S:
                    last_flush = time.monotonic()
                    await self.flush_spend()
            except self.store.db.errors as exc:  # the store is down: keep the keys we know
                log.warning("key store: %s", exc)

    # --- the admin API's operations -------------------------------------------------------

    async def create(
        self, tenant: str, *, name: str | None, models: list[str] | None, limits: KeyLimits
    ) -> tuple[KeyRecord, str]:
        secret = new_secret()
        now = time.time()
        record = KeyRecord(
            id=f"key-{secrets.token_hex(8)}",
            sha256=hash_api_key(secret),
            tenant=tenant,
            name=name,
            models=None if models is None else tuple(models),
            limits=limits,
            hint=secret[-4:],
            created_ts=now,
            updated_ts=now,
        )
        await self.store.insert(record)
        await self.reload()
        return record, secret

    async def replace(self, record: KeyRecord) -> KeyRecord:
        await self.store.replace(record)
        await self.reload()
        stored = await self.store.key(record.id)
        assert stored is not None
        return stored

    async def rotate(self, record: KeyRecord) -> tuple[KeyRecord, str]:
        """A new secret for the same key (id, limits and spend stay); the old one stops now."""
        secret = new_secret()
        rotated = replace(record, sha256=hash_api_key(secret), hint=secret[-4:])
        return await self.replace(rotated), secret

    # --- spend ------------------------------------------------------------------------------

    def record_spend(
        self, tenant: str, key_id: str, model: str, usage: Usage, cost: float, saved: float
    ) -> None:
        """One answer's spend, summed into its minute (written within a second)."""
        sums = self._pending[(time.time() // 60 * 60, tenant, key_id, model)]
        sums[0] += 1
        sums[1] += usage.prompt_tokens
        sums[2] += usage.completion_tokens
        sums[3] += cost
        sums[4] += saved

    async def flush_spend(self) -> None:
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0, 0])
        by_minute: defaultdict[float, list[SpendRow]] = defaultdict(list)
        for (minute, tenant, key_id, model), (n, p, c, cost, saved) in pending.items():
            by_minute[minute].append(
                SpendRow(tenant, key_id, model, int(n), int(p), int(c), cost, saved)
            )
        for minute, rows in by_minute.items():
            await self.store.add_spend(minute, rows)

    async def period_spend(self) -> Mapping[tuple[str, str], float]:
        """Spend so far this UTC day and month, by (subject name, period label): what the
        in-memory counters start from, so budgets hold across a restart."""
        spent: defaultdict[tuple[str, str], float] = defaultdict(float)
        for period in ("day", "month"):
            label = period_label(period)
            for row in await self.store.spend(since=period_start(period)):
                if row.key_id:
                    spent[(f"key:{row.key_id}", label)] += row.cost_usd
                spent[(f"tenant:{row.tenant}", label)] += row.cost_usd
        return spent


def _tenant(record: KeyRecord) -> Tenant:
    return Tenant(
        record.tenant,
        None if record.models is None else frozenset(record.models),
        key_id=record.id,
        limits=record.limits if record.limits.any else None,
    )
