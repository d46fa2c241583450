"""The request log: inputs, outputs and what answered, written off the hot path.

``RequestLog.record`` never waits: rows go into a bounded in-memory buffer that a background
task drains in batches to SQLite (the embedded default, in a thread) or PostgreSQL (many
replicas). When the buffer is full the row is dropped and counted — a request is never
slowed or refused because of logging. Redaction happens before a row is buffered;
retention deletes old rows at start and then hourly.

Columns added after the table's first version (``ADDED_COLUMNS``) are added to an existing
table when a sink opens it (``ALTER TABLE ... ADD COLUMN``), so an old log keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import orjson

from nearline.core.events import CallCost
from nearline.core.extras import missing_extra

if TYPE_CHECKING:
    import psycopg  # the postgres extra: imported by PostgresSink only

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    ts: float  # unix seconds when the request arrived
    request_id: str
    tenant: str
    model: str
    route: str
    source: str  # exact, semantic, inference, ... (what answered)
    similarity: float | None
    stream: bool
    outcome: str  # ok, error, abandoned
    error_code: str | None
    time_to_first_useful_ms: float | None
    time_to_first_token_ms: float | None
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    input: str  # the messages as JSON (redacted)
    output: str  # the answer text (redacted)
    # An answer made of several calls (a plan): each call's figures as a JSON array
    # (``calls_json``); None for an answer of one call.
    calls: str | None = None


COLUMNS = tuple(f.name for f in fields(RequestRecord))

_SQL_TYPES = {
    "ts": "DOUBLE PRECISION NOT NULL",
    "request_id": "TEXT NOT NULL",
    "tenant": "TEXT NOT NULL",
    "model": "TEXT NOT NULL",
    "route": "TEXT NOT NULL",
    "source": "TEXT NOT NULL",
    "similarity": "DOUBLE PRECISION",
    "stream": "BOOLEAN NOT NULL",
    "outcome": "TEXT NOT NULL",
    "error_code": "TEXT",
    "time_to_first_useful_ms": "DOUBLE PRECISION",
    "time_to_first_token_ms": "DOUBLE PRECISION",
    "total_ms": "DOUBLE PRECISION NOT NULL",
    "prompt_tokens": "INTEGER NOT NULL",
    "completion_tokens": "INTEGER NOT NULL",
    "cached_tokens": "INTEGER NOT NULL",
    "cost_usd": "DOUBLE PRECISION",
    "input": "TEXT NOT NULL",
    "output": "TEXT NOT NULL",
    "calls": "TEXT",
}
ADDED_COLUMNS = ("calls",)  # since the first version: added to an existing table on open
TABLE = "nearline_requests"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    + ", ".join(f"{name} {_SQL_TYPES[name]}" for name in COLUMNS)
    + ")"
)
CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts)"


def add_column(name: str, *, if_not_exists: bool = False) -> str:
    guard = "IF NOT EXISTS " if if_not_exists else ""
    return f"ALTER TABLE {TABLE} ADD COLUMN {guard}{name} {_SQL_TYPES[name]}"


def calls_json(calls: Sequence[CallCost]) -> str | None:
    """Each call's figures (role, tier, step, outcome, latency, cost, tokens) as the
    ``calls`` column holds them: the fields of the usage extension's ``calls``."""
    if not calls:
        return None
    return orjson.dumps(
        [
            {
                "role": c.role,
                "tier": c.tier,
                "step": c.step,
                "outcome": c.outcome,
                "latency_ms": round(c.latency_s * 1000, 3),
                "cost_usd": c.cost_usd,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
            }
            for c in calls
        ]
    ).decode()


class Redactor:
    """Replaces matches of the configured patterns; or drops content entirely."""

    def __init__(self, patterns: Sequence[str], store_content: bool) -> None:
        self._patterns = [re.compile(p) for p in patterns]
        self._store_content = store_content

    def __call__(self, text: str) -> str:
        if not self._store_content:
            return ""
        for pattern in self._patterns:
            text = pattern.sub("[REDACTED]", text)
        return text


class RowSink(Protocol):
    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What a failed write raises (the rows are then dropped and counted)."""
        ...

    async def open(self) -> None: ...

    async def write(self, rows: list[RequestRecord]) -> None: ...

    async def delete_older_than(self, cutoff_ts: float) -> int: ...

    async def aclose(self) -> None: ...


class SqliteSink:
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(CREATE_TABLE)
            db.execute(CREATE_INDEX)
            present = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
            for name in ADDED_COLUMNS:
                if name not in present:
                    db.execute(add_column(name))
            db.commit()
            return db

        self._db = await asyncio.to_thread(connect)

    async def write(self, rows: list[RequestRecord]) -> None:
        db = self._db
        assert db is not None
        placeholders = ", ".join("?" for _ in COLUMNS)
        statement = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders})"

        def insert() -> None:
            with db:
                db.executemany(statement, [astuple(row) for row in rows])

        await asyncio.to_thread(insert)

    async def delete_older_than(self, cutoff_ts: float) -> int:
        db = self._db
        assert db is not None

        def delete() -> int:
            with db:
                return db.execute(f"DELETE FROM {TABLE} WHERE ts < ?", (cutoff_ts,)).rowcount

        return await asyncio.to_thread(delete)

    async def aclose(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None


class PostgresSink:
    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise missing_extra("postgres", "request_log.postgres_dsn", exc) from exc
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._dsn = dsn
        self._db: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def open(self) -> None:
        import psycopg

        self._db = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        await self._db.execute(CREATE_TABLE)
        await self._db.execute(CREATE_INDEX)
        for name in ADDED_COLUMNS:
            await self._db.execute(add_column(name, if_not_exists=True))  # replicas race safely

    async def write(self, rows: list[RequestRecord]) -> None:
        assert self._db is not None
        placeholders = ", ".join("%s" for _ in COLUMNS)
        statement = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        async with self._db.cursor() as cursor:
            await cursor.executemany(statement, [astuple(row) for row in rows])

    async def delete_older_than(self, cutoff_ts: float) -> int:
        assert self._db is not None
        cursor = await self._db.execute(f"DELETE FROM {TABLE} WHERE ts < %s", (cutoff_ts,))
        return cursor.rowcount

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


class RequestLog:
    def __init__(
        self,
        sink: RowSink,
        *,
        buffer_rows: int,
        batch_rows: int = 200,
        retention_days: float | None = None,
        linger_s: float = 0.2,
    ) -> None:
        self._linger_s = linger_s
        self._sink = sink
        self._buffer: asyncio.Queue[RequestRecord] = asyncio.Queue(maxsize=buffer_rows)
        self._batch_rows = batch_rows
        self._retention_s = None if retention_days is None else retention_days * 86_400
        self._writer: asyncio.Task[None] | None = None
        self._writing = False
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        await self._sink.open()
        await self._apply_retention()
        self._writer = asyncio.create_task(self._drain_forever(), name="nearline-request-log")

    def record(self, row: RequestRecord) -> bool:
        """Buffer a row; never waits. Returns False (and counts it) when the buffer is full."""
        try:
            self._buffer.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def flush(self) -> None:
        """Write everything buffered so far (tests, shutdown)."""
        while not self._buffer.empty():
            await self._write(self._take_batch([]))

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Let the writer finish what is buffered (up to ``timeout_s``), then stop it."""
        deadline = time.monotonic() + timeout_s
        # Shutdown only: polling keeps record() and the writer free of extra signalling.
        while (not self._buffer.empty() or self._writing) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.flush()
        await self._sink.aclose()

    async def _drain_forever(self) -> None:
        last_retention = time.monotonic()
        while True:
            first = await self._buffer.get()
            self._writing = True  # holding rows outside the buffer: aclose() must wait for them
            try:
                await asyncio.sleep(self._linger_s)  # gather a batch: one transaction, not many
                await self._write(self._take_batch([first]))
            finally:
                self._writing = False
            if time.monotonic() - last_retention > 3600:
                await self._apply_retention()
                last_retention = time.monotonic()

    def _take_batch(self, rows: list[RequestRecord]) -> list[RequestRecord]:
        while not self._buffer.empty() and len(rows) < self._batch_rows:
            rows.append(self._buffer.get_nowait())
        return rows

    async def _write(self, rows: list[RequestRecord]) -> None:
        try:
            await self._sink.write(rows)
            self.written += len(rows)
        except self._sink.errors as exc:
            self.dropped += len(rows)
            log.warning("request log: %d rows not written: %s", len(rows), exc)

    async def _apply_retention(self) -> None:
        if self._retention_s is None:
            return
        removed = await self._sink.delete_older_than(time.time() - self._retention_s)
        if removed:
            log.info("request log: removed %d rows past retention", removed)
