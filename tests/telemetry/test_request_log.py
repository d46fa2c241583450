"""The request log records what answered and how fast, off the hot path, in SQLite or
PostgreSQL (the real server on 127.0.0.1:5432). Requests go through nearline's mock upstream."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from dataclasses import astuple, replace
from pathlib import Path

import psycopg
import pytest

from nearline.core.events import CallCost
from nearline.gateway.telemetry.requestlog import (
    _SQL_TYPES,
    ADDED_COLUMNS,
    COLUMNS,
    TABLE,
    PostgresSink,
    RequestLog,
    RequestRecord,
    SqliteSink,
    calls_json,
)
from nearline.insights.requestlog import LoggedCall, LogLocation, logged_calls, read_rows

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_DSN = "postgresql://127.0.0.1:5432/test"


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


# --- issue 19 point 4: a plan's calls, one by one, in the ``calls`` column -------------------

PLAN_CALLS = (
    CallCost("plan", "frontier", 0.05, 0.0006, prompt_tokens=40, completion_tokens=18),
    CallCost("step", "light", 0.02, 0.00001, prompt_tokens=60, completion_tokens=12, step=1),
    CallCost("step", "light", 0.0, 0.0, step=2, outcome="cancelled"),
)
OLD_TABLE = (  # the table as the first version created it: no ``calls``
    f"CREATE TABLE {TABLE} ("
    + ", ".join(f"{name} {_SQL_TYPES[name]}" for name in COLUMNS if name not in ADDED_COLUMNS)
    + ")"
)


def _planned(tenant: str) -> RequestRecord:
    return replace(_record(tenant), cost_usd=0.00061, calls=calls_json(PLAN_CALLS))


def _check_read_back(rows: list[RequestRecord], tenant: str) -> None:
    old, new = [row for row in rows if row.tenant == tenant]
    assert old.calls is None and logged_calls(old) == ()
    calls = logged_calls(new)
    assert [(c.role, c.tier, c.step, c.outcome) for c in calls] == [
        ("plan", "frontier", None, "ok"),
        ("step", "light", 1, "ok"),
        ("step", "light", 2, "cancelled"),
    ]
    assert calls[0] == LoggedCall("plan", "frontier", None, "ok", 50.0, 0.0006, 40, 18)
    assert sum(c.cost_usd for c in calls) == pytest.approx(new.cost_usd)


async def test_an_old_sqlite_log_gains_the_calls_column(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(OLD_TABLE)
        old = _record("t")
        db.execute(
            f"INSERT INTO {TABLE} VALUES ({', '.join('?' for _ in COLUMNS[:-1])})",
            astuple(old)[:-1],
        )
    before = read_rows(LogLocation(sqlite_path=path))  # not migrated yet: read all the same
    assert [row.calls for row in before] == [None]
    log = RequestLog(SqliteSink(path), buffer_rows=10)
    await log.start()  # adds the column
    log.record(_planned("t"))
    await log.aclose()
    _check_read_back(read_rows(LogLocation(sqlite_path=path)), "t")


async def test_an_old_postgres_table_gains_the_calls_column():
    schema = f"nl_{uuid.uuid4().hex[:12]}"
    dsn = f"postgresql://127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    async with await psycopg.AsyncConnection.connect(TEST_DSN, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:
                await db.execute(OLD_TABLE)
                placeholders = ", ".join("%s" for _ in COLUMNS[:-1])
                await db.execute(
                    f"INSERT INTO {TABLE} VALUES ({placeholders})", astuple(_record("t"))[:-1]
                )
            assert [row.calls for row in read_rows(LogLocation(postgres_dsn=dsn))] == [None]
            for _ in range(2):  # a second replica's open finds the column there
                log = RequestLog(PostgresSink(dsn), buffer_rows=10)
                await log.start()
                await log.aclose()
            log = RequestLog(PostgresSink(dsn), buffer_rows=10)
            await log.start()
            log.record(_planned("t"))
            await log.aclose()
            _check_read_back(read_rows(LogLocation(postgres_dsn=dsn)), "t")
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
