"""The report's time axis, wait histogram, preliminary help and per-model split (issue 15),
on hand-made rows whose figures are worked out by hand."""

from __future__ import annotations

import json

from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.report.cli import to_json
from nearline.insights.report.figures import build_report
from nearline.insights.report.html import render_html
from nearline.insights.report.text import render_text

T0 = 1_800_000_000.0


def rec(
    ts: float,
    model: str,
    useful: float | None,
    token: float | None,
    total: float,
    *,
    source: str = "inference",
    outcome: str = "ok",
) -> RequestRecord:
    return RequestRecord(
        ts=ts,
        request_id=f"r{ts}",
        tenant="acme",
        model=model,
        route="chat.completions",
        source=source,
        similarity=None,
        stream=True,
        outcome=outcome,
        error_code="upstream_error" if outcome == "error" else None,
        time_to_first_useful_ms=useful,
        time_to_first_token_ms=token,
        total_ms=total,
        prompt_tokens=10,
        completion_tokens=20,
        cached_tokens=0,
        cost_usd=0.01 if source == "inference" else 0.0,
        input="",
        output="",
    )


ROWS = [
    # big: a draft at 300 ms, the refined answer at 1.5 s (helped by 1.2 s: attention → flow)
    rec(T0 + 0, "big", 300.0, 1500.0, 3000.0),
    rec(T0 + 10, "big", 300.0, 1500.0, 3000.0),
    # big: a draft at 80 ms while the refined answer took 12 s (lost → instant, by 11.92 s)
    rec(T0 + 20, "big", 80.0, 12_000.0, 13_000.0),
    # big: no preliminary: first useful content is the first token
    rec(T0 + 30, "big", 2000.0, 2000.0, 4000.0),
    # big: failed before anything showed
    rec(T0 + 40, "big", None, None, 50.0, outcome="error"),
    # small: from the exact cache, instant
    rec(T0 + 50, "small", 1.0, 1.0, 3.0, source="exact"),
    # small: the client left with only the draft shown (helped by 900 - 40 = 860 ms)
    rec(T0 + 60, "small", 40.0, None, 900.0, outcome="abandoned"),
]


def test_the_histogram_puts_each_wait_in_one_band_and_counts_no_content_apart():
    bins = {b.label: (b.band, b.requests) for b in build_report(ROWS).histogram}
    assert bins["≤ 25 ms"] == ("instant", 1)
    assert bins["≤ 50 ms"] == ("instant", 1)
    assert bins["≤ 100 ms"] == ("instant", 1)
    assert bins["≤ 500 ms"] == ("flow kept", 2)
    assert bins["≤ 2.5 s"] == ("attention kept", 1)
    assert bins["> 10 s"] == ("lost", 0)
    assert bins["no content"] == ("no content", 1)
    assert sum(count for _, count in bins.values()) == len(ROWS)


def test_the_timeline_cuts_the_window_into_equal_intervals():
    timeline = build_report(ROWS).timeline
    assert len(timeline) == len(ROWS)  # fewer requests than intervals: one interval each
    assert timeline[0].start_ts == T0 and timeline[-1].end_ts == T0 + 60
    assert [b.requests for b in timeline] == [1] * len(ROWS)
    assert timeline[4].bands["no content"] == 1
    assert sum(b.requests for b in build_report(ROWS * 3).timeline) == 3 * len(ROWS)


def test_the_share_a_preliminary_helped_and_by_how_much():
    help_ = build_report(ROWS).preliminary
    assert help_ is not None
    assert (help_.helped, help_.requests) == (4, 7)
    assert help_.gain.p50_ms == 1200.0  # gains 860, 1200, 1200, 11920: nearest-rank median
    assert help_.gain.p95_ms == 11_920.0
    assert help_.mean_gain_ms == (1200 + 1200 + 11_920 + 860) / 4
    assert help_.band_moves == {
        "attention kept → flow kept": 2,
        "lost → instant": 1,
        "flow kept → instant": 1,
    }
    assert help_.better_band == 4


def test_the_split_per_model():
    models = {m.model: m for m in build_report(ROWS).models}
    assert list(models) == ["big", "small"]
    big, small = models["big"], models["small"]
    assert (big.requests, big.helped_by_preliminary, big.errors, big.from_cache) == (5, 3, 1, 0)
    assert big.bands["no content"] == 1 and big.bands["flow kept"] == 2
    assert (small.requests, small.from_cache, small.abandoned) == (2, 1, 1)
    assert small.usd_spent == 0.01  # the computed (abandoned) answer; the hit cost nothing


def test_the_pages_and_the_json_carry_the_new_sections():
    report = build_report(ROWS)
    text = render_text(report, "test")
    for title in ("WAIT HISTOGRAM", "OVER TIME", "PRELIMINARY ANSWERS", "PER MODEL"):
        assert title in text
    assert "helped               4 of 7 answers (57 %)" in text
    page = render_html(report, "test")
    for title in ("Wait histogram", "Over time", "Preliminary answers", "Per model"):
        assert f"<h2>{title}" in page
    figures = json.loads(json.dumps(to_json(report)))
    assert figures["preliminary"]["helped"] == 4
    assert figures["preliminary"]["share"] == 4 / 7
    assert figures["histogram"][-1] == {
        "low_ms": None,
        "high_ms": None,
        "band": "no content",
        "requests": 1,
        "label": "no content",
    }
    assert len(figures["timeline"]) == 7 and figures["models"][0]["model"] == "big"
