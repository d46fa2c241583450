"""The advice as a terminal report (tables) and as JSON. No decisions are made here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nearline.core.bands import BAND_LIMITS
from nearline.insights.advise.advisor import Advice, Mode, Option, PathAdvice
from nearline.insights.advise.profile import Profile


def assumptions(profile: Profile) -> list[str]:
    prices, policy = profile.prices, profile.policy
    return [
        "Costs are USD per month of 30 days; prices are inputs (profile `prices:` or --price).",
        f"Real-time: always-on instances at ${prices.instance_hour_usd:.2f}/instance-hour, sized "
        f"for the peak rate (average x peak_to_average) at "
        f"{policy.realtime_utilisation:.0%} utilisation, one request at a time.",
        f"Near-real-time: always-on instances at ${prices.instance_hour_usd:.2f}/instance-hour, "
        f"sized for the rate averaged over the window (a peak lasting burst_duration_s is smoothed "
        f"only by a longer window) at {policy.near_real_time_utilisation:.0%} utilisation; "
        "throughput rises linearly from rps_per_instance to batched_rps_per_instance as the "
        "window fills a batch of max_batch. Windows tried: "
        + ", ".join(_duration(w) for w in sorted(policy.windows_s))
        + "; requests wait half a window typically, 95 % of a window at p95.",
        f"Batch: pay-per-use instance-hours at ${prices.batch_instance_hour_usd:.2f} at batched "
        f"throughput, once per batch_period_s; per-request prices "
        f"{prices.batch_api_discount:.0%} off. Precomputable answers are looked up; the others "
        "wait for the next run.",
        f"Cache hits and precomputed answers take {policy.store_latency_ms:g} ms and cost nothing.",
        "Delay cost = requests x cost of each share's median time to first useful content: "
        "cost of a second of delay x seconds up to 10 s (the attention limit); past it the user "
        "is gone and the request costs lost_request_cost_usd (default: the cost of 10 s).",
        "typical = share-weighted median time to first useful content.",
        "Band = band of the p95 time to first useful content; the p95 of a mix is that of the "
        "slowest share holding more than 5 % of requests. Sequential steps add p50s and p95s.",
        "Recommended = lowest infrastructure + delay cost among options meeting the deadline.",
        "Next band: the delay cost saved if the deciding share got fast enough for its p95 to "
        "reach the next faster band (the whole distribution shifted down).",
    ]


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
        "paths": [_path_json(path) for path in advice.paths],
        "worth_making_faster": [path.path.name for path in advice.worth_making_faster()],
        "assumptions": assumptions(profile),
    }


def _path_json(advice: PathAdvice) -> dict[str, Any]:
    weakest = advice.weakest_step
    return {
        "path": advice.path.name,
        "requests_per_month": advice.requests_per_month,
        "recommended": {"mode": advice.recommended.mode.value, "wait_s": advice.recommended.wait_s},
        "band": advice.recommended.band.value,
        "options": [_option_json(option) for option in advice.options],
        "reliability": advice.reliability,
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
    }


def render_text(advice: Advice) -> str:
    profile = advice.profile
    lines = [f"nearline advise: {profile.name}  (USD per month of 30 days)", ""]
    lines += ["Options per path (* = recommended, ! = misses the deadline)"]
    rows: list[list[str]] = []
    for path in advice.paths:
        for index, option in enumerate(path.options):
            mark = (
                "*" if option is path.recommended else ("!" if not option.meets_deadline else " ")
            )
            rows.append(
                [
                    path.path.name if index == 0 else "",
                    f"{mark} {option_name(option)}",
                    _capacity(option),
                    _money(option.cost.total_usd),
                    _money(option.delay_cost_usd),
                    _money(option.total_usd),
                    _duration(option.typical_delay_s),
                    _duration(option.p95_s),
                    option.band.value,
                ]
            )
    lines += _table(
        ["path", "option", "capacity", "infra", "delay", "total", "typical", "p95", "band"],
        rows,
        right={2, 3, 4, 5, 6, 7},
    )
    lines += ["", "Per path"]
    summary = []
    for path in advice.paths:
        weakest = path.weakest_step
        summary.append(
            [
                path.path.name,
                option_name(path.recommended),
                path.recommended.band.value,
                f"{path.reliability:.2%}",
                "-" if weakest is None else f"{weakest.name} ({weakest.success_over_repeats:.2%})",
                "-" if path.path.abandoned_share is None else f"{path.path.abandoned_share:.1%}",
                path.faster.verdict,
            ]
        )
    lines += _table(
        [
            "path",
            "recommended",
            "band (p95)",
            "reliability",
            "weakest step",
            "abandoned",
            "next faster band",
        ],
        summary,
        right={3},
    )
    ranked = advice.worth_making_faster()
    lines += ["", "Worth making faster (delay cost saved by the next faster band, highest first)"]
    if not ranked:
        lines.append("  none: every path is instant or its delay costs nothing")
    for rank, path in enumerate(ranked, start=1):
        faster = path.faster
        assert faster.target is not None
        cost = "" if faster.cost_usd is None else f" for ${faster.cost_usd:,.0f}/month"
        lines.append(
            f"  {rank}. {path.path.name}: p95 {_duration(path.recommended.p95_s)} -> "
            f"{faster.target.value} (cut {_duration(faster.cut_s)}) saves "
            f"${faster.value_usd:,.0f}/month{cost}: {faster.verdict}"
        )
    lines += ["", "Assumptions"] + [f"  - {line}" for line in assumptions(profile)]
    return "\n".join(lines) + "\n"


def option_name(option: Option) -> str:
    if option.mode is Mode.REALTIME:
        return option.mode.value
    label = "window" if option.mode is Mode.NEAR_REAL_TIME else "every"
    return f"{option.mode.value} ({label} {_duration(option.wait_s)})"


def _capacity(option: Option) -> str:
    if not option.cost.instances and not option.cost.instance_hours:
        return "-"
    if option.cost.instances is None:
        return f"{option.cost.instance_hours:,.1f} h"
    return f"{option.cost.instances} inst"


def _money(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 10 else f"${usd:,.2f}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                cell.rjust(width) if index in right else cell.ljust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [line(headers), "  " + "  ".join("-" * width for width in widths)] + [
        line(row) for row in rows
    ]
