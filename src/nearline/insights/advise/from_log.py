"""Fill a profile with what the request log measured.

For every route in the log, the measured traffic (requests per day, peak-to-average), the share
answered from a cache or store, the time to first useful content of computed requests and the
abandonment replace the profile's values for the path of the same name. The measured cost per
request replaces ``api_cost_per_request_usd`` only for paths without self-hosted capacity (on
self-hosted paths the log's cost is already the capacity's). Routes the profile lacks become new
paths; business inputs the log cannot know (the cost of a second of delay, the precomputable
share, the pipeline's steps) come from the profile or from the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearline.insights.advise.latency import Latency
from nearline.insights.advise.profile import LatencyInput, PathInput, Profile, parse_profile
from nearline.insights.advise.requestlog import RouteMeasurement


def profile_from_log(
    measurements: Mapping[str, RouteMeasurement],
    base: Profile | None = None,
    *,
    name: str = "measured request log",
    delay_cost_per_second_usd: float = 0.0,
) -> Profile:
    if base is None:
        return parse_profile(
            {
                "name": name,
                "paths": [_new_path(m, delay_cost_per_second_usd) for m in measurements.values()],
            },
            origin="request log",
        )
    known = {path.name for path in base.paths}
    updated = [
        _measured(path, measurements[path.name]) if path.name in measurements else path
        for path in base.paths
    ]
    added = [
        PathInput.model_validate(_new_path(m, delay_cost_per_second_usd))
        for route, m in measurements.items()
        if route not in known
    ]
    return base.with_paths((*updated, *added))


def _latency_input(latency: Latency) -> dict[str, float]:
    return {"p50_ms": latency.p50_s * 1000.0, "p95_ms": latency.p95_s * 1000.0}


def _measured_fields(m: RouteMeasurement) -> dict[str, Any]:
    latency = m.computed_latency or m.store_latency
    assert latency is not None  # a route has at least one record
    return {
        "requests_per_day": m.requests_per_day,
        "peak_to_average": max(1.0, m.peak_to_average),
        "repeated_share": m.store_share,
        "time_to_first_useful_ms": _latency_input(latency),
        "abandoned_share": m.abandoned_share,
    }


def _new_path(m: RouteMeasurement, delay_cost_per_second_usd: float) -> dict[str, Any]:
    return {
        "name": m.route,
        "delay_cost_per_second_usd": delay_cost_per_second_usd,
        "api_cost_per_request_usd": m.mean_cost_of_computed_usd,
        **_measured_fields(m),
    }


def _measured(path: PathInput, m: RouteMeasurement) -> PathInput:
    fields = _measured_fields(m)
    fields["time_to_first_useful_ms"] = LatencyInput(**fields["time_to_first_useful_ms"])
    if path.capacity is None:
        fields["api_cost_per_request_usd"] = m.mean_cost_of_computed_usd
    return path.model_copy(update=fields)
