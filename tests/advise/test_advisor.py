"""The decision on one hand-worked path; every expected figure is derived in the comments.

The path: 86 400 requests/day (1 request/s on average), peaks of 3x lasting an hour, 25 % cache
hits, half of the rest precomputable, 400 ms median / 1.2 s p95 to first useful content. One
instance serves 0.5 requests/s alone and 2 requests/s at a full batch of 4. Requests also cost
$0.001 each (per-request price), a second of delay costs $0.01.
Prices: $1/instance-hour on demand, $0.50 spot, batch discount 50 %. Policy: real-time at 50 %
utilisation, near-real-time at 100 %, store lookups take 0 ms, windows of 1 s and 10 s.

Shared figures: requests/month = 86 400 x 30 = 2 592 000; computed (75 %) = 1 944 000;
computed rate = 0.75/s, peak = 2.25/s; per-request cost = 1 944 000 x $0.001 = $1 944.
"""

from __future__ import annotations

from typing import Any

import pytest

from nearline.core.bands import PerceptionBand
from nearline.insights.advise.advisor import Mode, advise, delay_cost_usd
from nearline.insights.advise.profile import Profile, parse_profile


def hand_profile(**path_changes: Any) -> Profile:
    path: dict[str, Any] = {
        "name": "hand",
        "requests_per_day": 86_400,
        "peak_to_average": 3,
        "burst_duration_s": 3600,
        "repeated_share": 0.25,
        "precomputable_share": 0.5,
        "time_to_first_useful_ms": {"p50_ms": 400, "p95_ms": 1200},
        "capacity": {"rps_per_instance": 0.5, "batched_rps_per_instance": 2, "max_batch": 4},
        "api_cost_per_request_usd": 0.001,
        "delay_cost_per_second_usd": 0.01,
        "batch_period_s": 3600,
        "speedup_cost_per_month_usd": 5000,
    }
    path.update(path_changes)
    return parse_profile(
        {
            "name": "hand-worked",
            "prices": {
                "instance_hour_usd": 1.0,
                "batch_instance_hour_usd": 0.5,
                "batch_api_discount": 0.5,
            },
            "policy": {
                "realtime_utilisation": 0.5,
                "near_real_time_utilisation": 1.0,
                "store_latency_ms": 0,
                "windows_s": [10.0, 1.0],
            },
            "paths": [path],
        }
    )


def test_real_time_is_sized_for_the_peak_and_costs_delay() -> None:
    option = advise(hand_profile()).paths[0].realtime
    # instances = ceil(2.25 / (0.5 x 0.5)) = 9; 9 x 720 h x $1 = $6 480; + $1 944 per request
    assert option.cost.instances == 9
    assert option.cost.total_usd == pytest.approx(6480 + 1944)
    # delay = 2 592 000 x (0.25 x 0 s + 0.75 x 0.4 s) x $0.01 = $7 776
    assert option.delay_cost_usd == pytest.approx(7776)
    assert option.total_usd == pytest.approx(16_200)
    # p95 = 1.2 s (computed share 75 % > 5 %): attention kept
    assert option.p95_s == pytest.approx(1.2)
    assert option.band is PerceptionBand.ATTENTION


def test_near_real_time_picks_the_window_with_the_lowest_total() -> None:
    option = advise(hand_profile()).paths[0].near_real_time
    # 1 s window: rate 2.25/s (the hour-long peak is not smoothed by 1 s); batch fill =
    # min(1, 2.25 x 1 / 4) = 0.5625; throughput = 0.5 + 1.5 x 0.5625 = 1.34375/s;
    # instances = ceil(2.25 / 1.34375) = ceil(1.67) = 2 -> $1 440 + $1 944 = $3 384.
    # delay = 2 592 000 x 0.75 x (0.4 + 0.5) x $0.01 = $17 496; total $20 880.
    # 10 s window: fill 1, throughput 2/s, still 2 instances ($3 384), but the delay is
    # 2 592 000 x 0.75 x (0.4 + 5) x $0.01 = $104 976: the 1 s window wins.
    assert option.mode is Mode.NEAR_REAL_TIME
    assert option.wait_s == 1.0
    assert option.cost.instances == 2
    assert option.cost.total_usd == pytest.approx(3384)
    assert option.delay_cost_usd == pytest.approx(17_496)
    # p95 = 1.2 + 0.95 x 1 = 2.15 s
    assert option.p95_s == pytest.approx(2.15)


def test_batch_pays_only_busy_hours_and_loses_the_requests_that_wait() -> None:
    option = advise(hand_profile()).paths[0].batch
    # 1 944 000 requests / 2 per s = 972 000 s = 270 h x $0.50 = $135; per request $972 (50 % off)
    assert option.cost.instance_hours == pytest.approx(270)
    assert option.cost.total_usd == pytest.approx(135 + 972)
    # 0.75 x 0.5 = 37.5 % wait for the next hourly run: 0.4 + 1800 s > 10 s -> lost, costing
    # the default 10 s x $0.01 = $0.10 each: 2 592 000 x 0.375 x $0.10 = $97 200
    assert option.delay_cost_usd == pytest.approx(97_200)
    assert option.band is PerceptionBand.LOST


def test_recommendation_and_whether_faster_is_worth_it() -> None:
    advice = advise(hand_profile()).paths[0]
    # totals: real-time $16 200 < near-real-time $20 880 < batch $98 307
    assert advice.recommended is advice.realtime
    # next band = flow (1 s): cut 1.2 - 1.0 = 0.2 s from the computed share's median:
    # 2 592 000 x 0.75 x 0.2 s x $0.01 = $3 888/month, less than the $5 000 it costs
    assert advice.faster.target is PerceptionBand.FLOW
    assert advice.faster.cut_s == pytest.approx(0.2)
    assert advice.faster.value_usd == pytest.approx(3888)
    assert advice.faster.verdict == "no: costs more than it saves"
    cheaper = advise(hand_profile(speedup_cost_per_month_usd=3000)).paths[0]
    assert cheaper.faster.verdict == "yes"


def test_when_delay_costs_nothing_the_cheapest_infrastructure_wins() -> None:
    advice = advise(hand_profile(delay_cost_per_second_usd=0.0)).paths[0]
    # infrastructure: batch $1 107 < near-real-time $3 384 < real-time $8 424
    assert advice.recommended is advice.batch
    assert advice.faster.verdict == "no: delay costs nothing here"


def test_a_deadline_rules_options_out() -> None:
    # p95: real-time 1.2 s, near-real-time (1 s) 2.15 s, batch lost
    at_2500 = advise(hand_profile(delay_cost_per_second_usd=0.0, deadline_ms=2500)).paths[0]
    assert at_2500.batch.meets_deadline is False
    assert at_2500.recommended is at_2500.near_real_time
    at_2000 = advise(hand_profile(delay_cost_per_second_usd=0.0, deadline_ms=2000)).paths[0]
    assert at_2000.recommended is at_2000.realtime
    # nothing meets 1 s: the fastest option is recommended, still flagged as missing it
    at_1000 = advise(hand_profile(deadline_ms=1000)).paths[0]
    assert at_1000.recommended is at_1000.realtime
    assert at_1000.recommended.meets_deadline is False


def test_delay_cost_is_linear_up_to_the_attention_limit_then_flat() -> None:
    path = hand_profile().paths[0]
    assert delay_cost_usd(path, 2.0) == pytest.approx(0.02)
    assert delay_cost_usd(path, 10.0) == pytest.approx(0.10)
    assert delay_cost_usd(path, 3600.0) == pytest.approx(0.10)
    priced = hand_profile(lost_request_cost_usd=7.5).paths[0]
    assert delay_cost_usd(priced, 3600.0) == 7.5


def test_mostly_precomputed_batch_is_instant() -> None:
    advice = advise(hand_profile(precomputable_share=0.96, repeated_share=0.0)).paths[0]
    # 4 % wait for the run (< 5 %): the p95 is the store's 0 ms -> instant
    assert advice.batch.band is PerceptionBand.INSTANT
