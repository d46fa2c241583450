"""The advice as a terminal report (tables). No decisions are made here (JSON:
``render_json.py``, HTML: ``render_html.py``)."""

from __future__ import annotations

from nearline.insights.advise.advisor import Advice, Mode, Option, PathAdvice
from nearline.insights.advise.fmt import duration as _duration
from nearline.insights.advise.fmt import money as _money
from nearline.insights.advise.fmt import table as _table
from nearline.insights.advise.profile import Profile
from nearline.insights.advise.render_log import log_sections


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
        "typical = median time to first useful content of the mix (the median of the slowest "
        "share that brings the requests counted from the slowest above half); never above "
        "the p95.",
        "Band = band of the p95 time to first useful content; the p95 of a mix is that of the "
        "slowest share holding more than 5 % of requests. Sequential steps add p50s and p95s.",
        "Recommended = lowest infrastructure + delay cost among options meeting the deadline "
        "and not ruled out (x): an interactive path is never batch, nor slower than real-time's "
        "band, unless the delay cost was given.",
        "Next band: the delay cost saved if the deciding share got fast enough for its p95 to "
        "reach the next faster band (the whole distribution shifted down).",
    ]


def render_text(advice: Advice) -> str:
    profile = advice.profile
    lines = [f"nearline advise: {profile.name}  (USD per month of 30 days)", ""]
    warned = [path for path in advice.paths if path.evidence.extrapolation()]
    if warned:
        lines += ["Warning: short observation"]
        lines += [f"  ! {path.path.name}: {path.evidence.extrapolation()}" for path in warned]
        lines += [""]
    lines += ["Options per path (* = recommended, ! = misses the deadline, x = ruled out)"]
    rows: list[list[str]] = []
    for path in advice.paths:
        for index, option in enumerate(path.options):
            mark = _mark(path, option)
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
    ruled = {o.ruled_out for p in advice.paths for o in p.options if o.ruled_out}
    lines += [f"  x: {reason}" for reason in sorted(ruled)]
    lines += ["", "Per path"]
    summary = []
    for path in advice.paths:
        weakest = path.weakest_step
        summary.append(
            [
                path.path.name,
                option_name(path.recommended),
                path.recommended.band.value,
                _reliability(path),
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
    lines += log_sections(advice)
    lines += ["", "Assumptions"] + [f"  - {line}" for line in assumptions(profile)]
    return "\n".join(lines) + "\n"


def _mark(path: PathAdvice, option: Option) -> str:
    if option is path.recommended:
        return "*"
    if not option.meets_deadline:
        return "!"
    return "x" if option.ruled_out else " "


def _reliability(path: PathAdvice) -> str:
    r = path.reliability
    if r.sample_size is None:
        return f"{r.value:.2%}"
    return f"{r.value:.2%} [{r.low:.1%}-{r.high:.1%}, n={r.sample_size}]"


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
