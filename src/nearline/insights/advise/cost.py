"""What each way of running a path costs in infrastructure, per month.

* **Real-time**: always-on instances sized for the peak rate, run at a utilisation low enough to
  keep queueing delay out of the answer.
* **Near-real-time** (window ``W``): always-on instances sized for the rate averaged over the
  window (a burst shorter than the window is smoothed by the queue), run hotter, and each
  instance gains throughput as the window fills a batch.
* **Batch** (period ``T``): pay-per-use (spot) instance-hours at full-batch throughput, only for
  the work done; per-request prices get the batch discount.

Requests answered from a cache cost nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nearline.insights.advise.profile import (
    DAYS_PER_MONTH,
    HOURS_PER_MONTH,
    SECONDS_PER_DAY,
    CapacityInput,
    PathInput,
    Prices,
)


@dataclass(frozen=True, slots=True)
class OptionCost:
    capacity_usd: float  # instances or instance-hours
    per_request_usd: float  # per-request (API) prices
    instances: int | None  # always-on instances; None when paid per use
    instance_hours: float  # per month

    @property
    def total_usd(self) -> float:
        return self.capacity_usd + self.per_request_usd


def computed_rps(path: PathInput) -> float:
    """Average rate of requests that need computing (cache hits excluded)."""
    return path.daily_requests / SECONDS_PER_DAY * (1.0 - path.repeated_share)


def sized_rate(path: PathInput, smoothing_s: float) -> float:
    """The rate capacity must keep up with when work may wait up to ``smoothing_s`` seconds.

    A peak of ``peak_to_average`` times the average lasting ``burst_duration_s``, averaged over a
    longer window, is ``average + (peak - average) * burst / window``.
    """
    average = computed_rps(path)
    peak = average * path.peak_to_average
    if smoothing_s <= path.burst_duration_s:
        return peak
    return average + (peak - average) * path.burst_duration_s / smoothing_s


def batch_fill(rate_rps: float, window_s: float, capacity: CapacityInput) -> float:
    """How full a batch gets when a window of ``window_s`` collects requests at ``rate_rps``."""
    return min(1.0, rate_rps * window_s / capacity.max_batch)


def throughput_rps(capacity: CapacityInput, fill: float) -> float:
    """Requests/s of one instance, from alone (fill 0) to a full batch (fill 1), linearly."""
    gain = capacity.batched_rps - capacity.rps_per_instance
    return capacity.rps_per_instance + gain * fill


def instances_for(rate_rps: float, per_instance_rps: float, utilisation: float) -> int:
    """Always-on instances for a rate; one at least as soon as there is any traffic."""
    if rate_rps <= 0:
        return 0
    return max(1, math.ceil(rate_rps / (per_instance_rps * utilisation) - 1e-9))


def _computed_per_month(path: PathInput) -> float:
    return computed_rps(path) * SECONDS_PER_DAY * DAYS_PER_MONTH


def _always_on(path: PathInput, prices: Prices, instances: int, discount: float) -> OptionCost:
    return OptionCost(
        capacity_usd=instances * HOURS_PER_MONTH * prices.instance_hour_usd,
        per_request_usd=_computed_per_month(path) * path.api_cost_per_request_usd * discount,
        instances=instances,
        instance_hours=instances * HOURS_PER_MONTH,
    )


def realtime_cost(path: PathInput, prices: Prices, utilisation: float) -> OptionCost:
    capacity = path.capacity
    instances = (
        0
        if capacity is None
        else instances_for(sized_rate(path, 0.0), capacity.rps_per_instance, utilisation)
    )
    return _always_on(path, prices, instances, 1.0)


def near_real_time_cost(
    path: PathInput, prices: Prices, utilisation: float, window_s: float
) -> OptionCost:
    capacity = path.capacity
    instances = 0
    if capacity is not None:
        rate = sized_rate(path, window_s)
        per_instance = throughput_rps(capacity, batch_fill(rate, window_s, capacity))
        instances = instances_for(rate, per_instance, utilisation)
    return _always_on(path, prices, instances, 1.0)


def batch_cost(path: PathInput, prices: Prices) -> OptionCost:
    requests = _computed_per_month(path)
    hours = 0.0 if path.capacity is None else requests / path.capacity.batched_rps / 3600.0
    return OptionCost(
        capacity_usd=hours * prices.batch_instance_hour_usd,
        per_request_usd=requests
        * path.api_cost_per_request_usd
        * (1.0 - prices.batch_api_discount),
        instances=None,
        instance_hours=hours,
    )
