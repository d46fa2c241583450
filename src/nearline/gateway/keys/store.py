"""The key store's tables: keys (hashed), a change counter, and the spend ledger.

``nearline_keys`` holds one row per key made through ``/admin/keys``: its SHA-256 digest
(never the key), tenant, models and limits; a revoked key keeps its row (``revoked_ts``).
Every change bumps ``nearline_keys_version`` in the same transaction, so a replica learns of
it by reading one integer. ``nearline_spend`` sums spend per minute, tenant, key and model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from nearline.config import KeyLimits
from nearline.gateway.keys.db import Database, Row, Statement

KEYS = "nearline_keys"
VERSION = "nearline_keys_version"
SPEND = "nearline_spend"

SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {KEYS} (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, "
    "tenant TEXT NOT NULL, name TEXT, models TEXT, rpm INTEGER, tpm INTEGER, "
    "budget_usd DOUBLE PRECISION, budget_period TEXT NOT NULL, hint TEXT NOT NULL, "
    "created_ts DOUBLE PRECISION NOT NULL, updated_ts DOUBLE PRECISION NOT NULL, "
    "revoked_ts DOUBLE PRECISION)",
    f"CREATE TABLE IF NOT EXISTS {VERSION} (one INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
    f"INSERT INTO {VERSION} (one, version) VALUES (1, 0) ON CONFLICT DO NOTHING",
    f"CREATE TABLE IF NOT EXISTS {SPEND} (minute_ts DOUBLE PRECISION NOT NULL, "
    "tenant TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL, requests BIGINT NOT NULL, "
    "prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, "
    "cost_usd DOUBLE PRECISION NOT NULL, saved_usd DOUBLE PRECISION NOT NULL, "
    "PRIMARY KEY (minute_ts, tenant, key_id, model))",
)

_COLUMNS = (
    "id, sha256, tenant, name, models, rpm, tpm, budget_usd, budget_period, hint, "
    "created_ts, updated_ts, revoked_ts"
)
_BUMP: Statement = (f"UPDATE {VERSION} SET version = version + 1 WHERE one = 1", ())


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    sha256: str
    tenant: str
    name: str | None
    models: tuple[str, ...] | None
    limits: KeyLimits
    hint: str  # the key's last characters, to tell keys apart in a list
    created_ts: float
    updated_ts: float
    revoked_ts: float | None = None

    @classmethod
    def from_row(cls, row: Row) -> KeyRecord:
        (
            id_,
            sha,
            tenant,
            name,
            models,
            rpm,
            tpm,
            budget,
            period,
            hint,
            created,
            updated,
            revoked,
        ) = row
        return cls(
            id=id_,
            sha256=sha,
            tenant=tenant,
            name=name,
            models=None if models is None else tuple(orjson.loads(models)),
            limits=KeyLimits(rpm=rpm, tpm=tpm, budget_usd=budget, budget_period=period),
            hint=hint,
            created_ts=created,
            updated_ts=updated,
            revoked_ts=revoked,
        )

    def public(self) -> dict[str, Any]:
        """What the admin API shows of a key (never its digest)."""
        return {
            "id": self.id,
            "object": "api_key",
            "tenant": self.tenant,
            "name": self.name,
            "models": None if self.models is None else list(self.models),
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "budget_usd": self.limits.budget_usd,
            "budget_period": self.limits.budget_period,
            "hint": self.hint,
            "created_at": int(self.created_ts),
            "updated_at": int(self.updated_ts),
            "revoked_at": None if self.revoked_ts is None else int(self.revoked_ts),
            "source": "api",
        }


@dataclass(frozen=True, slots=True)
class SpendRow:
    tenant: str
    key_id: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    saved_usd: float


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.open()
        await self.db.run([(sql, ()) for sql in SCHEMA])

    async def version(self) -> int:
        rows = await self.db.fetch(f"SELECT version FROM {VERSION} WHERE one = 1")
        return int(rows[0][0])

    async def keys(self, *, live_only: bool = False, tenant: str | None = None) -> list[KeyRecord]:
        where: list[str] = []
        params: list[Any] = []
        if live_only:
            where.append("revoked_ts IS NULL")
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM {KEYS}{clause} ORDER BY created_ts", params
        )
        return [KeyRecord.from_row(row) for row in rows]

    async def key(self, key_id: str) -> KeyRecord | None:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM {KEYS} WHERE id = ?", (key_id,))
        return KeyRecord.from_row(rows[0]) if rows else None

    async def insert(self, record: KeyRecord) -> None:
        models = None if record.models is None else orjson.dumps(list(record.models)).decode()
        limits = record.limits
        insert: Statement = (
            f"INSERT INTO {KEYS} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.sha256,
                record.tenant,
                record.name,
                models,
                limits.rpm,
                limits.tpm,
                limits.budget_usd,
                limits.budget_period,
                record.hint,
                record.created_ts,
                record.updated_ts,
                record.revoked_ts,
            ),
        )
        await self.db.run([insert, _BUMP])

    async def replace(self, record: KeyRecord) -> None:
        """Write ``record``'s changeable fields (name, models, limits, digest, revocation)."""
        models = None if record.models is None else orjson.dumps(list(record.models)).decode()
        limits = record.limits
        update: Statement = (
            f"UPDATE {KEYS} SET sha256 = ?, name = ?, models = ?, rpm = ?, tpm = ?, "
            "budget_usd = ?, budget_period = ?, hint = ?, updated_ts = ?, revoked_ts = ? "
            "WHERE id = ?",
            (
                record.sha256,
                record.name,
                models,
                limits.rpm,
                limits.tpm,
                limits.budget_usd,
                limits.budget_period,
                record.hint,
                time.time(),
                record.revoked_ts,
                record.id,
            ),
        )
        await self.db.run([update, _BUMP])

    # --- the spend ledger ----------------------------------------------------------------

    async def add_spend(self, minute_ts: float, rows: Sequence[SpendRow]) -> None:
        statements: list[Statement] = [
            (
                f"INSERT INTO {SPEND} (minute_ts, tenant, key_id, model, requests, prompt_tokens, "
                "completion_tokens, cost_usd, saved_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (minute_ts, tenant, key_id, model) DO UPDATE SET "
                f"requests = {SPEND}.requests + excluded.requests, "
                f"prompt_tokens = {SPEND}.prompt_tokens + excluded.prompt_tokens, "
                f"completion_tokens = {SPEND}.completion_tokens + excluded.completion_tokens, "
                f"cost_usd = {SPEND}.cost_usd + excluded.cost_usd, "
                f"saved_usd = {SPEND}.saved_usd + excluded.saved_usd",
                (
                    minute_ts,
                    r.tenant,
                    r.key_id,
                    r.model,
                    r.requests,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cost_usd,
                    r.saved_usd,
                ),
            )
            for r in rows
        ]
        if statements:
            await self.db.run(statements)

    async def spend(
        self,
        *,
        since: float = 0.0,
        tenant: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
    ) -> list[SpendRow]:
        """Spend summed per tenant, key and model since ``since`` (minute resolution)."""
        where: list[str] = ["minute_ts >= ?"]
        params: list[Any] = [float(since) // 60 * 60]
        for column, value in (("tenant", tenant), ("key_id", key_id), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = await self.db.fetch(
            "SELECT tenant, key_id, model, SUM(requests), SUM(prompt_tokens), "
            f"SUM(completion_tokens), SUM(cost_usd), SUM(saved_usd) FROM {SPEND} "
            f"WHERE {' AND '.join(where)} GROUP BY tenant, key_id, model "
            "ORDER BY tenant, key_id, model",
            params,
        )
        return [
            SpendRow(t, k, m, int(n), int(p), int(c), float(cost), float(saved))
            for t, k, m, n, p, c, cost, saved in rows
        ]
