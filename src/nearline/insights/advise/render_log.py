"""The terminal report's sections that only a request log can fill: what was measured (with
sample sizes and 95 % intervals), the what-if replay and what can be precomputed."""

from __future__ import annotations

from nearline.insights.advise.advisor import Advice, PathAdvice
from nearline.insights.advise.fmt import duration, money, table
from nearline.insights.advise.precompute import Precompute
from nearline.insights.advise.stats import Interval

SHOWN_QUESTIONS = 10


def _ms(value: Interval) -> str:
    return (
        f"{duration(value.value / 1000)} [{duration(value.low / 1000)}-"
        f"{duration(value.high / 1000)}]"
    )


def log_sections(advice: Advice) -> list[str]:
    measured = [path for path in advice.paths if path.evidence.measurement is not None]
    lines: list[str] = []
    if measured:
        lines += ["", "Measured from the log (95 % confidence intervals, n = sample size)"]
        for path in measured:
            lines += _measured(path)
    acted = [path for path in advice.paths if path.actions]
    if acted:
        lines += ["", "What-if: the logged traffic replayed offline (best first; money per month)"]
        rows = []
        for path in acted:
            base = path.actions[0].baseline
            rows.append(
                [
                    path.path.name,
                    "-",
                    "as logged",
                    "-",
                    duration(base.p50_ms.value / 1000),
                    _ms(base.p95_ms),
                    base.band.value,
                    _bands(base.by_band),
                    money(base.spend_usd),
                    money(base.delay_cost_usd),
                    "-",
                ]
            )
            for rank, action in enumerate(path.actions, start=1):
                p = action.projection
                rows.append(
                    [
                        "",
                        str(rank),
                        action.name,
                        action.affected.percent(0),
                        duration(p.p50_ms.value / 1000),
                        _ms(p.p95_ms),
                        p.band.value,
                        _bands(p.by_band),
                        money(p.spend_usd),
                        money(p.delay_cost_usd),
                        _signed(action.value_usd),
                    ]
                )
        lines += table(
            [
                "path",
                "#",
                "action",
                "affected",
                "p50",
                "p95 [95 % CI]",
                "band",
                "instant/flow/attention/lost",
                "spend",
                "delay",
                "saves",
            ],
            rows,
            right={4, 8, 9, 10},
        )
        notes = {f"{a.name}: {a.note}" for path in acted for a in path.actions}
        lines += [f"  - {note}" for note in sorted(notes)]
    if advice.precompute is not None:
        lines += _precompute(advice.precompute)
    return lines


def _measured(path: PathAdvice) -> list[str]:
    m = path.evidence.measurement
    assert m is not None
    parts = [f"{m.requests} requests over {duration(m.span_s)}"]
    if m.rate_per_day is not None:
        r = m.rate_per_day
        parts.append(f"{r.value:,.0f}/day [{r.low:,.0f}-{r.high:,.0f}]")
    lines = [f"  {path.path.name}: " + "; ".join(parts)]
    if m.computed_p50_ms is not None and m.computed_p95_ms is not None:
        lines.append(
            f"    computed time to first useful content: p50 {_ms(m.computed_p50_ms)}, "
            f"p95 {_ms(m.computed_p95_ms)} (n={m.computed_p95_ms.sample_size})"
        )
    shares = [("from a cache", m.store), ("abandoned", m.abandonment), ("failed", m.failures)]
    lines.append("    " + "; ".join(f"{name} {value.percent()}" for name, value in shares if value))
    streamed = "not recorded" if m.streamed is None else m.streamed.percent()
    kind = {True: "interactive", False: "not interactive", None: "unknown"}[path.path.interactive]
    lines.append(f"    streamed {streamed}: {kind}")
    lines.append(
        f"    delay cost ${path.path.delay_cost_per_s:.4g}/s: {path.evidence.delay_cost_note}"
    )
    if path.evidence.profile_fields:
        lines.append(
            "    the profile overrides the log for: " + ", ".join(path.evidence.profile_fields)
        )
    return lines


def _bands(by_band: tuple[tuple[object, float], ...]) -> str:
    return "/".join(f"{share:.0%}" for _, share in by_band)


def _signed(usd: float) -> str:
    return ("-" if usd < 0 else "") + money(abs(usd))


def _precompute(p: Precompute) -> list[str]:
    how = f"{p.embedder} cosine >= {p.threshold:g}" if p.embedder else "identical wording only"
    lines = [
        "",
        f"What can be precomputed (questions from the log's messages; clustered by {how})",
        f"  asked more than once: {p.repeated.percent()} of the requests with a question "
        f"({p.total_requests} requests in all), {p.cost_share:.1%} of their spend",
    ]
    for cluster in p.top[:SHOWN_QUESTIONS]:
        variants = f", {cluster.wordings} wordings" if cluster.wordings > 1 else ""
        lines.append(
            f"    {cluster.requests:>4} x  {cluster.question[:70]!r}{variants}  ({cluster.route})"
        )
    if len(p.top) > SHOWN_QUESTIONS:
        lines.append(f"    ... {len(p.top) - SHOWN_QUESTIONS} more")
    if p.warm_file is not None:
        lines.append(
            f"  warm file: {p.warm_file} ({p.warm_questions} questions): "
            f"nearline warm {p.warm_file} --url http://127.0.0.1:8080"
        )
    elif p.top:
        lines.append("  --warm-file PATH writes them for `nearline warm PATH`")
    if p.follow_ups:
        lines.append("  likely follow-ups (same tenant, one session; what prefetch would learn):")
        for f in p.follow_ups[:SHOWN_QUESTIONS]:
            lines.append(
                f"    {f.first[:50]!r} -> {f.then[:50]!r}: {f.times} times "
                f"({f.probability:.0%} of what followed)"
            )
    return lines
