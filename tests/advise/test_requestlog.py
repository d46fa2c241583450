"""The measured request log: reading JSONL, per-route figures by hand, filling a profile."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nearline.insights.advise.from_log import profile_from_log
from nearline.insights.advise.profile import parse_profile
from nearline.insights.advise.requestlog import (
    JsonlRequestLog,
    RequestLogError,
    RequestLogRecord,
    measure_routes,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def row(offset_s: float, ttfu_ms: float, source: str = "inference", **extra: Any) -> dict[str, Any]:
    return {
        "route": "chat",
        "started_at": (T0 + timedelta(seconds=offset_s)).isoformat(),
        "time_to_first_useful_ms": ttfu_ms,
        "total_ms": ttfu_ms * 3,
        "source": source,
        **extra,
    }


ROWS = [
    row(0, 5, "exact_cache"),
    row(10, 100, cost_usd=0.01),
    row(20, 7, "semantic_cache"),
    row(70, 400, cost_usd=0.03, abandoned=True),
    row(130, 200, cost_usd=0.02, tier="standard"),
]


def write_log(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return log


def test_jsonl_records_are_typed(tmp_path: Path) -> None:
    records = list(JsonlRequestLog(write_log(tmp_path, ROWS)).records())
    assert len(records) == 5  # the blank line is skipped
    assert records[0] == RequestLogRecord(
        route="chat",
        started_at=T0,
        time_to_first_useful_ms=5.0,
        total_ms=15.0,
        source="exact_cache",
    )
    assert records[0].served_from_store
    assert not records[1].served_from_store
    assert records[4].tier == "standard"


def test_measurements_by_hand(tmp_path: Path) -> None:
    measured = measure_routes(JsonlRequestLog(write_log(tmp_path, ROWS)).records())["chat"]
    # minutes from the first request: 0, 0, 0, 1, 2 -> counts [3, 1, 1] over 3 minutes
    # rate = 5 / 180 s = 2 400/day; peak-to-average = 3 / (5 / 3) = 1.8
    assert measured.requests == 5
    assert measured.requests_per_day == pytest.approx(2400)
    assert measured.peak_to_average == pytest.approx(1.8)
    assert measured.store_share == pytest.approx(0.4)
    assert measured.abandoned_share == pytest.approx(0.2)
    # computed: 100, 200, 400 ms -> median 200; p95 at rank 0.95 x 2 = 1.9: 200 + 0.9 x 200
    assert measured.computed_latency is not None
    assert measured.computed_latency.p50_s == pytest.approx(0.2)
    assert measured.computed_latency.p95_s == pytest.approx(0.38)
    assert measured.mean_cost_of_computed_usd == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"route": "chat"}, "requests.jsonl:2: started_at"),
        ({**row(0, 1), "started_at": "2026-11-26T12:00:00"}, "requests.jsonl:2: .*timezone"),
        ({**row(0, 1), "cost_usd": "lots"}, "cost_usd"),
    ],
)
def test_bad_lines_are_reported_with_their_number(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    log = write_log(tmp_path, [ROWS[0], bad])
    with pytest.raises(RequestLogError, match=message):
        list(JsonlRequestLog(log).records())


def test_the_log_fills_the_profile_and_adds_unknown_routes(tmp_path: Path) -> None:
    rows = [*ROWS, {**row(0, 50), "route": "search"}, {**row(60, 70), "route": "search"}]
    measured = measure_routes(JsonlRequestLog(write_log(tmp_path, rows)).records())
    base = parse_profile(
        {
            "name": "shop",
            "paths": [
                {  # no traffic, no latency: the log fills them in
                    "name": "chat",
                    "delay_cost_per_second_usd": 0.02,
                    "precomputable_share": 0.3,
                },
                {
                    "name": "report",
                    "requests_per_day": 5,
                    "time_to_first_useful_ms": {"p50_ms": 9, "p95_ms": 9},
                },
            ],
        },
        partial=True,
    )
    profile = profile_from_log(measured, base, delay_cost_per_second_usd=0.001)
    chat, report, search = profile.paths
    assert chat.requests_per_day == pytest.approx(2400)  # measured
    assert chat.repeated_share == pytest.approx(0.4)
    assert chat.computed_latency.p50_s == pytest.approx(0.2)
    assert chat.api_cost_per_request_usd == pytest.approx(0.02)  # no capacity: the log's cost
    assert chat.abandoned_share == pytest.approx(0.2)
    assert chat.delay_cost_per_second_usd == 0.02  # business input kept
    assert chat.precomputable_share == 0.3
    assert report.requests_per_day == 5  # not in the log: unchanged
    assert search.delay_cost_per_second_usd == 0.001  # new route: from the command line
    # A field the profile sets itself wins over the measurement, field by field.
    given = parse_profile(
        {"name": "shop", "paths": [{"name": "chat", "peak_to_average": 7}]}, partial=True
    )
    overlaid = profile_from_log(measured, given)
    assert overlaid.paths[0].peak_to_average == 7.0
    assert overlaid.paths[0].requests_per_day == pytest.approx(2400)
    standalone = profile_from_log(measured)
    assert [p.name for p in standalone.paths] == ["chat", "search"]
