"""Capacity sizing rules of the cost model, by hand."""

from __future__ import annotations

import pytest

from nearline.insights.advise.cost import batch_fill, instances_for, sized_rate, throughput_rps
from nearline.insights.advise.profile import CapacityInput, PathInput


def path(**changes: object) -> PathInput:
    fields: dict[str, object] = {
        "name": "p",
        "requests_per_day": 86_400,
        "peak_to_average": 5,
        "burst_duration_s": 2,
        "time_to_first_useful_ms": {"p50_ms": 10, "p95_ms": 20},
    }
    return PathInput.model_validate({**fields, **changes})


def test_a_window_longer_than_the_burst_smooths_the_peak() -> None:
    # average 1/s, peak 5/s for 2 s
    assert sized_rate(path(), 0.0) == 5.0  # real-time: the peak
    assert sized_rate(path(), 2.0) == 5.0  # a window as long as the burst does not smooth it
    assert sized_rate(path(), 10.0) == pytest.approx(1 + 4 * 2 / 10)  # 1.8/s
    assert sized_rate(path(repeated_share=0.5), 0.0) == 2.5  # cache hits need no capacity


def test_batches_fill_with_the_window_and_raise_throughput() -> None:
    capacity = CapacityInput(rps_per_instance=10, batched_rps_per_instance=50, max_batch=20)
    assert batch_fill(5.0, 2.0, capacity) == 0.5  # 10 requests of 20
    assert batch_fill(5.0, 60.0, capacity) == 1.0
    assert throughput_rps(capacity, 0.5) == 30.0  # 10 + (50 - 10) x 0.5
    no_gain = CapacityInput(rps_per_instance=10)
    assert throughput_rps(no_gain, 1.0) == 10.0


def test_instances_round_up_and_exist_only_with_traffic() -> None:
    assert instances_for(9.0, 10.0, 0.6) == 2  # 9 / 6 = 1.5
    assert instances_for(6.0, 10.0, 0.6) == 1  # exactly full
    assert instances_for(0.001, 10.0, 0.6) == 1
    assert instances_for(0.0, 10.0, 0.6) == 0
