"""Fill a profile with what the request log measured; the profile overlays the log.

For every route in the log, the measured traffic (requests per day, peak-to-average), the share
answered from a cache or store, the time to first useful content of computed requests, the
abandonment and whether the route is interactive (most requests streamed) fill the path of the
same name — field by field: a field the profile sets itself wins over the measurement, and the
output lists which ones did. The measured cost per request fills ``api_cost_per_request_usd``
only for paths without self-hosted capacity (on self-hosted paths the log's cost is already the
capacity's). Routes the profile lacks become new paths.

The cost of a second of delay is, in this order: the profile's, ``--delay-cost-per-second``,
or derived from the log's abandonment (``delaycost.py``); the evidence says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearline.insights.advise.delaycost import derive_delay_cost
from nearline.insights.advise.evidence import DelayCostFrom, PathEvidence
from nearline.insights.advise.latency import Latency
from nearline.insights.advise.profile import PathInput, Profile, parse_profile
from nearline.insights.advise.requestlog import RouteMeasurement


def profile_from_log(
    measurements: Mapping[str, RouteMeasurement],
    base: Profile | None = None,
    *,
    name: str = "measured request log",
    delay_cost_per_second_usd: float | None = None,
    lost_request_cost_usd: float | None = None,
) -> Profile:
    return overlay(
        measurements,
        base,
        name=name,
        delay_cost_per_second_usd=delay_cost_per_second_usd,
        lost_request_cost_usd=lost_request_cost_usd,
    )[0]


def overlay(
    measurements: Mapping[str, RouteMeasurement],
    base: Profile | None = None,
    *,
    name: str = "measured request log",
    delay_cost_per_second_usd: float | None = None,
    lost_request_cost_usd: float | None = None,
) -> tuple[Profile, dict[str, PathEvidence]]:
    """The profile the advisor decides on, and each path's evidence."""
    head: dict[str, Any] = {"name": name} if base is None else base.model_dump(exclude={"paths"})
    base_paths: tuple[PathInput, ...] = () if base is None else base.paths
    known = {path.name for path in base_paths}
    inputs: list[dict[str, Any]] = [
        path.model_dump(exclude_unset=True) | {"name": path.name} for path in base_paths
    ]
    inputs += [{"name": route} for route in measurements if route not in known]
    paths: list[dict[str, Any]] = []
    evidence: dict[str, PathEvidence] = {}
    for given in inputs:
        fields, found = _path(
            given,
            measurements.get(given["name"]),
            delay_cost_per_second_usd,
            lost_request_cost_usd,
        )
        paths.append(fields)
        evidence[given["name"]] = found
    profile = parse_profile({**head, "paths": paths}, origin="profile + request log")
    return profile, evidence


def _path(
    given: dict[str, Any],
    m: RouteMeasurement | None,
    delay_cost: float | None,
    lost_cost: float | None,
) -> tuple[dict[str, Any], PathEvidence]:
    fields = dict(given)
    if lost_cost is not None:
        fields.setdefault("lost_request_cost_usd", lost_cost)
    if "delay_cost_per_second_usd" in fields or delay_cost is not None:
        fields.setdefault("delay_cost_per_second_usd", delay_cost)
        source = DelayCostFrom.GIVEN
    else:
        source = DelayCostFrom.NONE
    if m is None:
        return fields, PathEvidence(delay_cost_from=source)
    measured = _measured_fields(m, self_hosted=fields.get("capacity") is not None)
    overridden = tuple(sorted(key for key in measured if key in given))
    fields = {**measured, **fields}
    derived = None
    if source is DelayCostFrom.NONE:
        derived = derive_delay_cost(
            m.records,
            lost_request_cost_usd=fields.get("lost_request_cost_usd"),
            mean_cost_usd=m.mean_cost_of_computed_usd,
        )
        if derived is not None:
            fields["delay_cost_per_second_usd"] = derived.per_second_usd
            source = DelayCostFrom.DERIVED
    return fields, PathEvidence(m, source, derived, overridden)


def _latency_input(latency: Latency) -> dict[str, float]:
    return {"p50_ms": latency.p50_s * 1000.0, "p95_ms": latency.p95_s * 1000.0}


def _measured_fields(m: RouteMeasurement, *, self_hosted: bool) -> dict[str, Any]:
    latency = m.computed_latency or m.store_latency
    assert latency is not None  # a route has at least one record
    fields: dict[str, Any] = {
        "requests_per_day": m.requests_per_day,
        "peak_to_average": max(1.0, m.peak_to_average),
        "repeated_share": m.store_share,
        "time_to_first_useful_ms": _latency_input(latency),
        "abandoned_share": m.abandoned_share,
    }
    if m.interactive is not None:
        fields["interactive"] = m.interactive
    if not self_hosted:
        fields["api_cost_per_request_usd"] = m.mean_cost_of_computed_usd
    return fields
