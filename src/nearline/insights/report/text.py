"""The report as one terminal page."""

from __future__ import annotations

from nearline.insights.report.figures import BANDS, FLOW_LIMIT_S, NO_CONTENT, PathFigures, Report
from nearline.insights.report.formatting import (
    clock,
    duration,
    moment,
    share,
    timing_cells,
    usd,
)

BAR_WIDTH = 24
BAND_HEADERS = ("instant", "flow", "attention", "lost", "none")
assert len(BAND_HEADERS) == len(BANDS) + 1  # the bands, then NO_CONTENT


def render_text(report: Report, source: str) -> str:
    lines = [
        f"nearline report — {report.requests} requests from {source}",
        f"  {moment(report.first_ts)} → {moment(report.last_ts)}",
        "",
    ]
    if not report.requests:
        return "\n".join([*lines, "No requests in this window.", ""])
    for section in (
        _bands,
        _histogram,
        _timeline,
        _time,
        _preliminary,
        _models,
        _savings,
        _endings,
        _slow,
    ):
        lines += section(report)
        lines.append("")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Left-align the first ``text_columns`` columns, right-align the figures after them."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        aligned = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(aligned).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _band_cells(counts: dict[str, int], requests: int) -> list[str]:
    return [share(counts[band], requests) for band in (*BANDS, NO_CONTENT)]


def _bands(report: Report) -> list[str]:
    header = ["route · model · source", "requests", *BAND_HEADERS, "p50", "p95"]
    rows = [
        [p.name, str(p.requests), *_band_cells(p.bands, p.requests), *_spread(p)]
        for p in report.paths
    ]
    rows.append(
        [
            "all",
            str(report.requests),
            *_band_cells(report.bands, report.requests),
            duration(report.wait.p50_ms),
            duration(report.wait.p95_ms),
        ]
    )
    return [
        "PERCEPTION BANDS — time to first useful content, share of requests",
        "  instant ≤ 100 ms · flow kept ≤ 1 s · attention kept ≤ 10 s · lost beyond 10 s",
        "  none: no useful content at all (an error, or the client left first)",
        *_table(header, rows),
    ]


def _spread(path: PathFigures) -> list[str]:
    return [duration(path.wait.p50_ms), duration(path.wait.p95_ms)]


def _time(report: Report) -> list[str]:
    longest = max(s.mean_wait_ms + s.mean_after_ms for s in report.sources) or 1.0
    header = ["source", "requests", "useful p50", "p95", "token p50", "total p50", "p95"]
    header.append("mean: waiting ▓ + streaming ░")
    rows = [
        [*timing_cells(s), _bar(s.mean_wait_ms, s.mean_after_ms, longest)] for s in report.sources
    ]
    return [
        "WHERE THE TIME GOES — per source: first useful content, first token, end of answer",
        *_table(header, rows),
    ]


def _bar(wait_ms: float, after_ms: float, longest_ms: float) -> str:
    waiting = round(BAR_WIDTH * wait_ms / longest_ms)
    streaming = round(BAR_WIDTH * (wait_ms + after_ms) / longest_ms) - waiting
    label = f" {duration(wait_ms)} + {duration(after_ms)}"
    return ("▓" * waiting + "░" * streaming).ljust(BAR_WIDTH) + label


def _savings(report: Report) -> list[str]:
    s = report.savings
    tiers = ", ".join(f"{t.tier} {t.requests}" for t in s.tiers) or "none"
    lines = [
        "SAVINGS",
        f"  answered from cache  {s.from_cache} of {s.requests} "
        f"({share(s.from_cache, s.requests)}): {tiers}",
        f"  tokens saved         {s.tokens_saved:,} "
        f"(prompt {s.prompt_tokens_saved:,}, completion {s.completion_tokens_saved:,})",
        f"  money saved          {usd(s.usd_saved)}"
        + (
            " (no model in the log has a price)"
            if s.usd_saved is None
            else " (each hit at its model's mean computed cost)"
        ),
        f"  money spent          {usd(s.usd_spent)}"
        + ("" if s.usd_spent is None else " on computed answers"),
    ]
    return lines


def _endings(report: Report) -> list[str]:
    e = report.endings
    codes = ", ".join(f"{code} {count}" for code, count in e.errors_by_code.items())
    abandoned = f"  abandoned            {e.abandoned} ({share(e.abandoned, e.requests)})"
    if e.abandoned:
        abandoned += (
            f", {e.abandoned_before_content} before any content; clients left after "
            f"{duration(e.abandoned_after.p50_ms)} (median)"
        )
    errors = f"  errors               {e.errors} ({share(e.errors, e.requests)})"
    return ["ABANDONMENT AND ERRORS", abandoned, errors + (f": {codes}" if codes else "")]


def _slow(report: Report) -> list[str]:
    title = (
        "SLOW PATHS THAT MATTER MOST — ranked by user-seconds waited beyond the "
        f"{FLOW_LIMIT_S:g} s flow limit,\n  Σ max(0, wait - 1 s): how many requests x how far over"
    )
    if not report.slow_paths:
        return [title, f"  none: every request showed useful content within {FLOW_LIMIT_S:g} s"]
    header = ["#", "path", "beyond 1 s", "requests over 1 s", "p95 wait"]
    rows = [
        [
            str(rank),
            p.name,
            duration(p.seconds_beyond_flow_limit * 1000),
            f"{p.over_flow_limit} of {p.requests}",
            duration(p.wait.p95_ms),
        ]
        for rank, p in enumerate(report.slow_paths, start=1)
    ]
    return [title, *_table(header, rows, text_columns=2)]


def _histogram(report: Report) -> list[str]:
    most = max((b.requests for b in report.histogram), default=0) or 1
    rows = [
        [b.label, b.band, str(b.requests), share(b.requests, report.requests)]
        for b in report.histogram
    ]
    table = _table(["wait", "band", "requests", "share"], rows, text_columns=2)
    bars = ["█" * round(BAR_WIDTH * b.requests / most) for b in report.histogram]
    return [
        "WAIT HISTOGRAM — time to first useful content, each bin inside one perception band",
        table[0],
        *(f"{line}  {bar}".rstrip() for line, bar in zip(table[1:], bars, strict=True)),
    ]


def _timeline(report: Report) -> list[str]:
    header = ["from", "to", "requests", *BAND_HEADERS, "p50", "p95"]
    rows = [
        [
            clock(b.start_ts),
            clock(b.end_ts),
            str(b.requests),
            *_band_cells(b.bands, b.requests),
            duration(b.wait.p50_ms),
            duration(b.wait.p95_ms),
        ]
        for b in report.timeline
    ]
    return [
        "OVER TIME — the window in equal intervals (UTC): requests, bands, wait",
        *_table(header, rows, text_columns=2),
    ]


def _preliminary(report: Report) -> list[str]:
    help_ = report.preliminary
    title = "PRELIMINARY ANSWERS — a draft or a near-match on screen before the refined answer"
    if help_ is None or not help_.helped:
        return [title, "  none: no answer showed a preliminary before its refined text"]
    moves = ", ".join(f"{move} {count}" for move, count in help_.band_moves.items())
    return [
        title,
        f"  helped               {help_.helped} of {help_.requests} answers "
        f"({share(help_.helped, help_.requests)})",
        f"  earlier by           p50 {duration(help_.gain.p50_ms)}, p95 "
        f"{duration(help_.gain.p95_ms)}, mean {duration(help_.mean_gain_ms)} "
        "(first refined token - first useful content)",
        f"  into a better band   {help_.better_band}" + (f": {moves}" if moves else ""),
    ]


def _models(report: Report) -> list[str]:
    header = ["model", "requests", *BAND_HEADERS, "p50", "p95", "cached", "prelim.", "errors"]
    rows = [
        [
            m.model,
            str(m.requests),
            *_band_cells(m.bands, m.requests),
            duration(m.wait.p50_ms),
            duration(m.wait.p95_ms),
            share(m.from_cache, m.requests),
            share(m.helped_by_preliminary, m.requests),
            share(m.errors, m.requests),
        ]
        for m in report.models
    ]
    spent = [f"{m.model} {usd(m.usd_spent)}" for m in report.models if m.usd_spent is not None]
    lines = ["PER MODEL — every source together", *_table(header, rows)]
    return lines + ([f"  spent: {', '.join(spent)}"] if spent else [])
