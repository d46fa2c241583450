"""Perception bands, compound reliability and the latency-mix rules, on hand-worked cases."""

from __future__ import annotations

import pytest

from nearline.core.bands import PerceptionBand, band_of, next_faster, upper_limit_s
from nearline.insights.advise.latency import (
    Latency,
    LatencyShare,
    deciding_share,
    p95_s,
    typical_delay_s,
    uniform_wait,
)
from nearline.insights.advise.reliability import StepReliability, compound_reliability, weakest_step


@pytest.mark.parametrize(
    ("seconds", "band"),
    [
        (0.0, PerceptionBand.INSTANT),
        (0.1, PerceptionBand.INSTANT),  # limits are inclusive
        (0.1001, PerceptionBand.FLOW),
        (1.0, PerceptionBand.FLOW),
        (1.5, PerceptionBand.ATTENTION),
        (10.0, PerceptionBand.ATTENTION),
        (10.01, PerceptionBand.LOST),
        (86_400.0, PerceptionBand.LOST),
    ],
)
def test_band_of_uses_the_100ms_1s_10s_limits(seconds: float, band: PerceptionBand) -> None:
    assert band_of(seconds) is band


def test_next_faster_band_and_limits() -> None:
    assert next_faster(PerceptionBand.LOST) is PerceptionBand.ATTENTION
    assert next_faster(PerceptionBand.FLOW) is PerceptionBand.INSTANT
    assert next_faster(PerceptionBand.INSTANT) is None
    assert upper_limit_s(PerceptionBand.ATTENTION) == 10.0


def test_negative_wait_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        band_of(-0.1)


def test_twenty_steps_at_95_percent_succeed_36_percent_of_the_time() -> None:
    # 0.95 ** 20: ln(0.95) = -0.051293, x 20 = -1.025866, e^-1.025866 = 0.358486
    steps = [StepReliability("tool call", 0.95, repeat=20)]
    assert compound_reliability(steps) == pytest.approx(0.358486, abs=1e-6)


def test_retries_and_steps_multiply() -> None:
    # retrieval 0.99; model 0.9 with one retry: 1 - 0.1**2 = 0.99; tool 0.98 run twice: 0.9604
    # together: 0.99 * 0.99 * 0.9604 = 0.94128...
    steps = [
        StepReliability("retrieval", 0.99),
        StepReliability("model", 0.9, retries=1),
        StepReliability("tool", 0.98, repeat=2),
    ]
    assert compound_reliability(steps) == pytest.approx(0.99 * 0.99 * 0.9604)
    weakest = weakest_step(steps)
    assert weakest is not None
    assert weakest.name == "tool"
    assert compound_reliability([]) == 1.0
    assert weakest_step([]) is None


def test_invalid_step_is_rejected() -> None:
    with pytest.raises(ValueError, match="success"):
        StepReliability("x", 1.5)
    with pytest.raises(ValueError, match="repeat"):
        StepReliability("x", 0.9, repeat=0)


def test_latency_adds_and_waits() -> None:
    total = Latency.from_ms(100, 300) + uniform_wait(2.0)  # + (1.0 s, 1.9 s)
    assert total.p50_s == pytest.approx(1.1)
    assert total.p95_s == pytest.approx(2.2)
    faster = Latency(0.5, 1.5).shifted_down(0.7)
    assert faster.p50_s == 0.0
    assert faster.p95_s == pytest.approx(0.8)
    with pytest.raises(ValueError, match="p50 <= p95"):
        Latency(2.0, 1.0)


def test_a_slow_share_under_five_percent_does_not_set_the_p95() -> None:
    fast = LatencyShare("precomputed", 0.97, Latency(0.01, 0.01))
    slow = LatencyShare("waits", 0.03, Latency(1800.0, 3420.0))
    # typical is the mix's median: 97 % of the requests take 10 ms, so 10 ms — not the
    # share-weighted 0.97 x 0.01 + 0.03 x 1800 = 54 s, which exceeded the p95 it sits beside.
    assert typical_delay_s([fast, slow]) == 0.01
    assert p95_s([fast, slow]) == 0.01
    assert deciding_share([fast, slow]) is fast


@pytest.mark.parametrize("slow_share", [0.01, 0.04, 0.05, 0.06, 0.3, 0.5, 0.51, 0.9])
def test_typical_never_exceeds_the_p95(slow_share: float) -> None:
    mix = [
        LatencyShare("cache", 1 - slow_share, Latency(0.01, 0.02)),
        LatencyShare("waits", slow_share, Latency(40.0, 80.0)),
    ]
    assert typical_delay_s(mix) <= p95_s(mix)
    # past half the requests the median is the slow share's
    assert typical_delay_s(mix) == (40.0 if slow_share > 0.5 else 0.01)


def test_a_slow_share_over_five_percent_sets_the_p95() -> None:
    fast = LatencyShare("cache", 0.9, Latency(0.01, 0.01))
    slow = LatencyShare("computed", 0.1, Latency(0.4, 1.2))
    assert p95_s([fast, slow]) == 1.2
    # two slow shares of 3 % each: together 6 % > 5 %, so the second slowest decides
    slowest = LatencyShare("waits", 0.03, Latency(100.0, 200.0))
    second = LatencyShare("computed", 0.03, Latency(1.0, 2.0))
    rest = LatencyShare("cache", 0.94, Latency(0.01, 0.01))
    assert p95_s([rest, second, slowest]) == 2.0
