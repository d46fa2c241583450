"""Fixtures for the advisor's tests: request logs written the way the gateway writes them,
through ``RequestLog`` + ``SqliteSink``.

``chat_traffic`` is a known day on a streamed chat path: 240 requests over six minutes from
eight tenants, waits from 0.4 to 4.9 s, users leaving more often the longer they wait
(a third of the requests that wait over 3 s are abandoned), two ``upstream_error`` rows, and
questions drawn from Quora duplicate pairs (``../shared/data/semantic``) so that paraphrases,
repeats and a follow-up (A then B in one session) are known.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord, SqliteSink

QQP = Path(__file__).parents[3] / "shared" / "data" / "semantic" / "qqp_pairs_dev.csv"
# Quora duplicate pairs whose MiniLM cosine is at least 0.976 (above the semantic cache's
# default hit threshold, 0.9625): each pair is one question in two wordings.
FIRST = ("What is the best time to visit India?", "When is the best time to visit India?")
THEN = (
    "What are some gift ideas for a female friend?",
    "What are some gift ideas for female friend?",
)
T0 = 1_780_000_000.0
SESSION = 6  # requests per session: FIRST, THEN, then four questions asked once


def record(
    at: float,
    *,
    question: str = "",
    tenant: str = "acme",
    model: str = "chat",
    stream: bool = True,
    source: str = "inference",
    outcome: str = "ok",
    first_ms: float | None = 500.0,
    cost: float = 0.002,
) -> RequestRecord:
    messages = [{"role": "user", "content": question}] if question else []
    total = (first_ms or 800.0) + 700.0
    return RequestRecord(
        ts=at,
        request_id=f"r{at}",
        tenant=tenant,
        model=model,
        route="chat.completions",
        source=source,
        similarity=None,
        stream=stream,
        outcome=outcome,
        error_code="upstream_error" if outcome == "error" else None,
        time_to_first_useful_ms=first_ms,
        time_to_first_token_ms=first_ms,
        total_ms=total,
        prompt_tokens=12,
        completion_tokens=40,
        cached_tokens=0,
        cost_usd=0.0 if source != "inference" else cost,
        input=json.dumps(messages) if question else "",
        output="an answer",
    )


def once_asked(count: int) -> list[str]:
    """Distinct questions, each asked once: Quora question pairs marked not duplicate."""
    if not QQP.is_file():
        pytest.skip(f"{QQP} is not here")
    with QQP.open(encoding="utf-8") as rows:
        found = [row["question1"] for row in csv.DictReader(rows) if row["is_duplicate"] == "0"]
    return list(dict.fromkeys(found))[:count]


def chat_traffic(with_content: bool = True, *, stream: bool = True) -> list[RequestRecord]:
    sessions = 40
    fillers = once_asked(sessions * (SESSION - 2)) if with_content else []
    rows = []
    for i in range(sessions * SESSION):
        session, step = divmod(i, SESSION)
        first_ms: float | None = 400.0 + (i * 37 % 10) * 500.0  # 0.4 ... 4.9 s
        outcome = "abandoned" if first_ms is not None and first_ms > 3000 and i % 3 == 0 else "ok"
        if i in (50, 170):
            outcome, first_ms = "error", None
        question = ""
        if with_content:
            wording = (session // 8) % 2  # each tenant asks in both wordings
            question = (
                FIRST[wording]
                if step == 0
                else THEN[wording]
                if step == 1
                else fillers[session * (SESSION - 2) + step - 2]
            )
        rows.append(
            record(
                T0 + i * 1.5,
                question=question,
                tenant=f"user{session % 8}",
                stream=stream,
                outcome=outcome,
                first_ms=first_ms,
            )
        )
    return rows


def write_log(path: Path, rows: list[RequestRecord]) -> Path:
    async def write() -> None:
        log = RequestLog(SqliteSink(path), buffer_rows=len(rows) + 10, linger_s=0)
        await log.start()
        for row in rows:
            assert log.record(row)
        await log.aclose()

    asyncio.run(write())
    return path


class Traffic:
    """The helpers above, for tests (``--import-mode=importlib`` imports no test module)."""

    FIRST = FIRST
    THEN = THEN
    record = staticmethod(record)
    chat_traffic = staticmethod(chat_traffic)
    write_log = staticmethod(write_log)


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()
