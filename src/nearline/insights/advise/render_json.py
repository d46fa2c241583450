"""The advice as JSON (``--format json``). These field names are stable:

``paths[].recommendation`` (the option's name, e.g. ``real-time``), ``paths[].band``,
``paths[].sample_size`` (requests the log measured; null for a profile-only path),
``paths[].reliability`` (``value``, ``ci_low``, ``ci_high``, ``sample_size``, ``source``),
``paths[].actions[]`` (``rank``, ``action``, ``time_to_first_useful`` with ``p50_ms``,
``p95_ms``, ``band``, ``by_band``; ``cost_usd_per_month``, ``value_usd_per_month``, ...) and
``precompute`` (``share``, ``warm_file``, ...). Intervals are ``{value, ci_low, ci_high,
sample_size}``. HTML (``render_html.py``) is drawn from this same document.
"""

from __future__ import annotations

from typing import Any

from nearline.core.bands import BAND_LIMITS
from nearline.insights.advise.actions import Action, Projection
from nearline.insights.advise.advisor import Advice, Option, PathAdvice
from nearline.insights.advise.precompute import Precompute
from nearline.insights.advise.render import assumptions, option_name
from nearline.insights.advise.stats import Interval


def to_json(advice: Advice) -> dict[str, Any]:
    profile = advice.profile
    return {
        "profile": profile.name,
        "currency": "USD",
        "period": "month (30 days)",
        "bands": [
            {
                "band": b.band.value,
                "upper_s": None if b.upper_s == float("inf") else b.upper_s,
                "meaning": b.meaning,
            }
            for b in BAND_LIMITS
        ],
        "prices": profile.prices.model_dump(),
        "policy": profile.policy.model_dump(),
        "warnings": warnings(advice),
        "paths": [_path_json(path) for path in advice.paths],
        "precompute": None if advice.precompute is None else _precompute(advice.precompute),
        "worth_making_faster": [path.path.name for path in advice.worth_making_faster()],
        "assumptions": assumptions(profile),
    }


def warnings(advice: Advice) -> list[str]:
    found = []
    for path in advice.paths:
        reach = path.evidence.extrapolation()
        if reach is not None:
            found.append(f"{path.path.name}: {reach}")
    return found


def _interval(value: Interval | None) -> dict[str, float | int] | None:
    return None if value is None else value.to_json()


def _path_json(advice: PathAdvice) -> dict[str, Any]:
    weakest = advice.weakest_step
    evidence = advice.evidence
    m = evidence.measurement
    reliability = advice.reliability
    derived = evidence.derived
    return {
        "path": advice.path.name,
        "recommendation": option_name(advice.recommended),
        "recommended": {"mode": advice.recommended.mode.value, "wait_s": advice.recommended.wait_s},
        "band": advice.recommended.band.value,
        "interactive": advice.path.interactive,
        "sample_size": evidence.sample_size,
        "observed_span_s": None if m is None else m.span_s,
        "extrapolation": evidence.extrapolation(),
        "profile_fields": list(evidence.profile_fields),
        "measured": None
        if m is None
        else {
            "requests_per_day": _interval(m.rate_per_day),
            "time_to_first_useful_p50_ms": _interval(m.computed_p50_ms),
            "time_to_first_useful_p95_ms": _interval(m.computed_p95_ms),
            "store_share": _interval(m.store),
            "abandonment": _interval(m.abandonment),
            "failures": _interval(m.failures),
            "streamed": _interval(m.streamed),
        },
        "delay_cost": {
            "per_second_usd": advice.path.delay_cost_per_s,
            "source": evidence.delay_cost_from.value,
            "note": evidence.delay_cost_note,
            "slope_per_s": None if derived is None else derived.slope_per_s.to_json(),
            "abandon_cost_usd": None if derived is None else derived.abandon_cost_usd,
        },
        "requests_per_month": advice.requests_per_month,
        "options": [_option_json(option) for option in advice.options],
        "reliability": {
            "value": reliability.value,
            "ci_low": reliability.low,
            "ci_high": reliability.high,
            "sample_size": reliability.sample_size,
            "source": "modelled" if reliability.sample_size is None else "measured",
        },
        "weakest_step": None
        if weakest is None
        else {"name": weakest.name, "success": weakest.success_over_repeats},
        "abandoned_share": advice.path.abandoned_share,
        "next_band": {
            "target": None if advice.faster.target is None else advice.faster.target.value,
            "cut_s": advice.faster.cut_s,
            "value_usd": advice.faster.value_usd,
            "cost_usd": advice.faster.cost_usd,
            "verdict": advice.faster.verdict,
        },
        "baseline": None if not advice.actions else _projection(advice.actions[0].baseline),
        "actions": [_action(rank, a) for rank, a in enumerate(advice.actions, start=1)],
    }


def _option_json(option: Option) -> dict[str, Any]:
    return {
        "mode": option.mode.value,
        "wait_s": option.wait_s,
        "instances": option.cost.instances,
        "instance_hours": option.cost.instance_hours,
        "capacity_usd": option.cost.capacity_usd,
        "per_request_usd": option.cost.per_request_usd,
        "infrastructure_usd": option.cost.total_usd,
        "delay_usd": option.delay_cost_usd,
        "total_usd": option.total_usd,
        "typical_delay_s": option.typical_delay_s,
        "p95_s": option.p95_s,
        "band": option.band.value,
        "meets_deadline": option.meets_deadline,
        "ruled_out": option.ruled_out,
    }


def _projection(p: Projection) -> dict[str, Any]:
    return {
        "p50_ms": p.p50_ms.to_json(),
        "p95_ms": p.p95_ms.to_json(),
        "band": p.band.value,
        "by_band": {band.value: share for band, share in p.by_band},
        "spend_usd_per_month": p.spend_usd,
        "delay_cost_usd_per_month": p.delay_cost_usd,
    }


def _action(rank: int, action: Action) -> dict[str, Any]:
    projection = action.projection
    return {
        "rank": rank,
        "action": action.name,
        "affected": action.affected.to_json(),
        "time_to_first_useful": _projection(projection),
        "cost_usd_per_month": projection.total_usd,
        "spend_usd_per_month": projection.spend_usd,
        "spend_change_usd_per_month": action.spend_change_usd,
        "delay_cost_usd_per_month": projection.delay_cost_usd,
        "value_usd_per_month": action.value_usd,
        "p95_cut_ms": action.p95_cut_ms,
        "note": action.note,
    }


def _precompute(p: Precompute) -> dict[str, Any]:
    return {
        "share": p.repeated.value,
        "share_ci": p.repeated.to_json(),
        "cost_share": p.cost_share,
        "requests_with_a_question": p.repeated.sample_size,
        "total_requests": p.total_requests,
        "threshold": p.threshold,
        "embedder": p.embedder,
        "warm_file": None if p.warm_file is None else str(p.warm_file),
        "warm_questions": p.warm_questions,
        "top": [
            {
                "route": c.route,
                "model": c.model,
                "question": c.question,
                "requests": c.requests,
                "wordings": c.wordings,
                "cost_usd": c.cost_usd,
            }
            for c in p.top
        ],
        "follow_ups": [
            {
                "route": f.route,
                "first": f.first,
                "then": f.then,
                "times": f.times,
                "probability": f.probability,
            }
            for f in p.follow_ups
        ],
    }
