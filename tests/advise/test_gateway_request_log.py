"""``nearline advise --log`` reads the gateway's own request log (SQLite), rows written by
the real request-log writer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from nearline.cli import main
from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord, SqliteSink


def _row(model: str, source: str, first_ms: float, at: float) -> RequestRecord:
    return RequestRecord(
        ts=at,
        request_id=uuid.uuid4().hex,
        tenant="t",
        model=model,
        route="chat.completions",
        source=source,
        similarity=None,
        stream=True,
        outcome="ok",
        error_code=None,
        time_to_first_useful_ms=first_ms,
        time_to_first_token_ms=first_ms,
        total_ms=first_ms + 500,
        prompt_tokens=10,
        completion_tokens=20,
        cached_tokens=0,
        cost_usd=0.001 if source == "inference" else 0.0,
        input="[]",
        output="x",
    )


async def _write_log(path: Path) -> None:
    log = RequestLog(SqliteSink(path), buffer_rows=1000, linger_s=0)
    await log.start()
    now = time.time() - 600
    for i in range(40):
        log.record(
            _row("chat", "inference" if i % 4 else "exact", 1800.0 if i % 4 else 20.0, now + i * 10)
        )
    await log.aclose()


def test_advise_reads_the_gateways_sqlite_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "requests.sqlite"
    asyncio.run(_write_log(path))
    assert main(["advise", "--log", str(path), "--delay-cost-per-second", "0.01", "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in advice["paths"]] == ["chat.completions chat"]
    assert advice["profile"] == "request log requests.sqlite"


def test_an_empty_gateway_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "empty.sqlite"

    async def create() -> None:
        log = RequestLog(SqliteSink(path), buffer_rows=10)
        await log.start()
        await log.aclose()

    asyncio.run(create())
    assert main(["advise", "--log", str(path)]) == 2
    assert "no records" in capsys.readouterr().err
