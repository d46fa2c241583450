"""Report figures on hand-made rows, each expected value worked out by hand (see conftest.py)."""

from __future__ import annotations

import pytest

from nearline.insights.report.figures import build_report, percentile

# Waits (time to first useful content, else the whole duration) of model m's computed
# answers: 50, 1000, 2500, 3000 (abandoned), 12000 (error).


def test_percentiles_are_nearest_rank():
    assert percentile([50, 1000, 2500, 3000, 12_000], 0.5) == 2500  # rank ceil(2.5) = 3
    assert percentile([50, 1000, 2500, 3000, 12_000], 0.95) == 12_000  # rank ceil(4.75) = 5
    assert percentile([], 0.5) is None


def test_bands_per_path_and_overall(worked_example_rows):
    report = build_report(worked_example_rows())
    assert report.requests == 9
    assert report.bands == {
        "instant": 4,  # 50, 5, 8, 30 ms
        "flow kept": 1,  # exactly 1 s
        "attention kept": 1,  # 2.5 s
        "lost": 1,  # 12 s
        "no content": 2,  # the abandoned and the failed request
    }
    paths = {p.name: p for p in report.paths}
    m_inference = paths["chat.completions · m · inference"]
    assert m_inference.requests == 5
    assert m_inference.bands == {
        "instant": 1,
        "flow kept": 1,
        "attention kept": 1,
        "lost": 0,
        "no content": 2,
    }
    assert (m_inference.wait.p50_ms, m_inference.wait.p95_ms) == (2500, 12_000)
    assert (m_inference.errors, m_inference.abandoned) == (1, 1)
    assert [p.name for p in report.paths] == [  # most requests first, then by name
        "chat.completions · m · inference",
        "chat.completions · m · exact",
        "chat.completions · n · inference",
        "chat.completions · n · semantic",
    ]


def test_slow_paths_are_ranked_by_user_seconds_beyond_one_second(worked_example_rows):
    report = build_report(worked_example_rows())
    ranked = [(p.name, p.over_flow_limit, p.seconds_beyond_flow_limit) for p in report.slow_paths]
    # m: 2.5 s - 1 s, 3 s - 1 s (abandoned), 12 s - 1 s (error) = 1.5 + 2 + 11 = 14.5 s
    # n: 12 s - 1 s = 11 s (one request, but a long wait); a wait of exactly 1 s adds nothing
    assert ranked == [
        ("chat.completions · m · inference", 3, pytest.approx(14.5)),
        ("chat.completions · n · inference", 1, pytest.approx(11.0)),
    ]
    assert len(build_report(worked_example_rows(), top=1).slow_paths) == 1


def test_where_the_time_goes_per_source(worked_example_rows):
    sources = {s.source: s for s in build_report(worked_example_rows()).sources}
    assert sorted(sources) == ["exact", "inference", "semantic"]
    exact = sources["exact"]
    assert (exact.requests, exact.first_useful.p50_ms, exact.total.p95_ms) == (2, 5, 30)
    assert exact.mean_wait_ms == pytest.approx((5 + 8) / 2)
    assert exact.mean_after_ms == pytest.approx((15 + 22) / 2)
    inference = sources["inference"]
    # waits 50, 1000, 2500, 3000, 12000, 12000; after them 200, 400, 1500, 0, 0, 3000
    assert inference.mean_wait_ms == pytest.approx(30_550 / 6)
    assert inference.mean_after_ms == pytest.approx(5_100 / 6)
    # of the four with content, 50, 1000, 2500, 12000: rank ceil(0.5 x 4) = 2
    assert inference.first_useful.p50_ms == 1000


def test_savings_tokens_share_and_money(worked_example_rows):
    savings = build_report(worked_example_rows()).savings
    assert (savings.from_cache, savings.requests) == (3, 9)
    assert savings.cache_share == pytest.approx(1 / 3)
    assert savings.tokens_saved == 30 + 30 + 10
    assert (savings.prompt_tokens_saved, savings.completion_tokens_saved) == (27, 43)
    # m's computed answers cost 0.003, 0.001, 0.002: a hit saves the mean, 0.002; n has no price
    assert savings.usd_saved == pytest.approx(2 * 0.002)
    tiers = {t.tier: (t.requests, t.tokens, t.usd) for t in savings.tiers}
    assert tiers == {"exact": (2, 60, pytest.approx(0.004)), "semantic": (1, 10, None)}
    assert savings.usd_spent == pytest.approx(0.006)


def test_abandonment_and_errors(worked_example_rows):
    endings = build_report(worked_example_rows()).endings
    assert (endings.abandoned, endings.abandoned_before_content) == (1, 1)
    assert endings.abandoned_after.p50_ms == 3000
    assert endings.errors_by_code == {"upstream_timeout": 1}
    assert endings.error_share == pytest.approx(1 / 9)


def test_an_empty_window_is_a_report_of_nothing():
    report = build_report([])
    assert report.requests == 0
    assert report.slow_paths == []
    assert report.savings.cache_share == 0.0
