"""The request log records what answered and how fast, off the hot path, in SQLite or
PostgreSQL (the real server on 127.0.0.1:5432). Requests go through nearline's mock upstream."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import psycopg

from nearline.gateway.telemetry.requestlog import (
    TABLE,
    PostgresSink,
    RequestLog,
    RequestRecord,
    SqliteSink,
)

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _record(tenant: str, ts: float | None = None) -> RequestRecord:
    return RequestRecord(
        ts=time.time() if ts is None else ts,
        request_id=uuid.uuid4().hex,
        tenant=tenant,
        model="m",
        route="chat.completions",
        source="inference",
        similarity=None,
        stream=False,
        outcome="ok",
        error_code=None,
        time_to_first_useful_ms=12.0,
        time_to_first_token_ms=12.0,
        total_ms=30.0,
        prompt_tokens=3,
        completion_tokens=5,
        cached_tokens=0,
        cost_usd=None,
        input="[]",
        output="hello",
    )


def test_requests_are_logged_with_source_timings_tokens_and_redaction(tmp_path, make_gateway):
    db_path = tmp_path / "log.sqlite"
    gateway = make_gateway(request_log={"sqlite_path": str(db_path)})
    for _ in range(2):
        assert gateway.chat("mail me at jane.doe@example.com please").status_code == 200
    gateway.stop()  # shutting down writes what the log still holds
    rows = (
        sqlite3.connect(db_path)
        .execute(
            f"SELECT source, outcome, time_to_first_token_ms, total_ms, completion_tokens, input,"
            f" output FROM {TABLE} ORDER BY ts"
        )
        .fetchall()
    )
    assert [r[0] for r in rows] == ["inference", "exact"]
    for _source, outcome, ttft, total, completion, logged_input, output in rows:
        assert outcome == "ok"
        assert 0 < ttft <= total
        assert completion > 0
        assert "jane.doe@example.com" not in logged_input
        assert "[REDACTED]" in logged_input
        assert output


async def test_a_full_buffer_drops_log_rows_never_requests(tmp_path: Path):
    log = RequestLog(SqliteSink(tmp_path / "x.sqlite"), buffer_rows=2)
    accepted = [log.record(_record("t")) for _ in range(5)]  # the writer is not running yet
    assert accepted == [True, True, False, False, False]
    assert log.dropped == 3
    await log.start()
    await log.aclose()
    assert log.written == 2


async def test_postgres_sink_and_retention():
    tenant = f"t-{uuid.uuid4().hex}"
    log = RequestLog(PostgresSink(POSTGRES_DSN), buffer_rows=100, retention_days=1)
    await log.start()
    log.record(_record(tenant))
    log.record(_record(tenant, ts=time.time() - 3 * 86_400))  # past retention
    await log.flush()
    await log.aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as db:
        count = await (
            await db.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant = %s", (tenant,))
        ).fetchone()
        assert count == (2,)
        restarted = RequestLog(PostgresSink(POSTGRES_DSN), buffer_rows=10, retention_days=1)
        await restarted.start()  # retention runs at start
        await restarted.aclose()
        count = await (
            await db.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant = %s", (tenant,))
        ).fetchone()
        assert count == (1,)
        await db.execute(f"DELETE FROM {TABLE} WHERE tenant = %s", (tenant,))


async def test_logging_goes_on_while_the_database_is_stuck(tmp_path: Path):
    gate = asyncio.Event()
    taken = asyncio.Event()

    class StuckSink(SqliteSink):
        async def write(self, rows: list[RequestRecord]) -> None:
            taken.set()
            await gate.wait()
            await super().write(rows)

    log = RequestLog(StuckSink(tmp_path / "stuck.sqlite"), buffer_rows=1000)
    await log.start()
    log.record(_record("t"))
    await asyncio.wait_for(taken.wait(), 5)  # the writer now hangs on the database
    assert all(log.record(_record("t")) for _ in range(100))  # a plain call: cannot wait
    assert log.dropped == 0
    gate.set()
    await log.aclose()
    assert log.written == 101
