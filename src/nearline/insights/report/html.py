"""The report as one self-contained HTML page: inline CSS and SVG, no external assets."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from nearline.insights.report.figures import BANDS, FLOW_LIMIT_S, NO_CONTENT, Report
from nearline.insights.report.formatting import (
    clock,
    duration,
    moment,
    share,
    timing_cells,
    usd,
)
from nearline.insights.report.svg import BarRow, Column, Segment, bar_chart, column_chart, legend

BAND_COLOURS = {
    "instant": "#1a9850",
    "flow kept": "#91cf60",
    "attention kept": "#fdae61",
    "lost": "#d73027",
    NO_CONTENT: "#8c8c8c",
}
assert set(BAND_COLOURS) == {*BANDS, NO_CONTENT}
WAIT_COLOUR, STREAM_COLOUR, SLOW_COLOUR = "#3b6fb6", "#a9c4ea", "#d73027"
BAR_WIDTH_PX = 860

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 960px; color: #222; }
h1 { font-size: 22px; margin-bottom: 0; } h2 { font-size: 17px; margin-top: 28px; }
.meta, .note { color: #666; } .chart text { font-size: 12px; fill: #222; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.tile b { display: block; font-size: 20px; }
.legend span { margin-right: 14px; }
"""


def render_html(report: Report, source: str) -> str:
    body = [
        "<h1>nearline report</h1>",
        f'<p class="meta">{report.requests} requests from {escape(source)} · '
        f"{moment(report.first_ts)} → {moment(report.last_ts)}</p>",
    ]
    if report.requests:
        body += [
            _bands(report),
            _histogram(report),
            _timeline(report),
            _time(report),
            _preliminary(report),
            _models(report),
            _savings(report),
            _endings(report),
            _slow(report),
        ]
    else:
        body.append("<p>No requests in this window.</p>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>nearline report</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    lines = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _tiles(tiles: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><b>{escape(value)}</b>{escape(label)}</div>'
            for value, label in tiles
        )
        + "</div>"
    )


def _band_row(label: str, counts: dict[str, int], requests: int) -> BarRow:
    return BarRow(
        label=label,
        segments=[
            Segment(count, BAND_COLOURS[band], f"{band}: {count} ({share(count, requests)})")
            for band, count in counts.items()
        ],
        caption=f"{requests} requests",
    )


def _bands(report: Report) -> str:
    rows = [_band_row(p.name, p.bands, p.requests) for p in report.paths]
    rows.append(_band_row("all", report.bands, report.requests))
    shares = [
        [
            p.name,
            str(p.requests),
            *(share(p.bands[b], p.requests) for b in p.bands),
            duration(p.wait.p50_ms),
            duration(p.wait.p95_ms),
        ]
        for p in report.paths
    ]
    return "\n".join(
        [
            "<h2>Perception bands per path</h2>",
            '<p class="note">Time to first useful content: instant ≤ 100 ms, flow kept ≤ 1 s, '
            "attention kept ≤ 10 s, lost beyond; no content: an error or a client that left "
            "first. Each bar is 100 % of a path's requests.</p>",
            legend([(colour, band) for band, colour in BAND_COLOURS.items()]),
            bar_chart([_scaled_to_share(row) for row in rows], scale=1.0, title="bands"),
            _table(
                ["route · model · source", "requests", *BAND_COLOURS, "p50 wait", "p95 wait"],
                shares,
            ),
        ]
    )


def _scaled_to_share(row: BarRow) -> BarRow:
    total = sum(s.value for s in row.segments) or 1.0
    return BarRow(
        row.label, [Segment(s.value / total, s.colour, s.title) for s in row.segments], row.caption
    )


def _time(report: Report) -> str:
    rows = [
        BarRow(
            label=s.source,
            segments=[
                Segment(s.mean_wait_ms, WAIT_COLOUR, f"waiting {duration(s.mean_wait_ms)}"),
                Segment(s.mean_after_ms, STREAM_COLOUR, f"streaming {duration(s.mean_after_ms)}"),
            ],
            caption=f"{duration(s.mean_wait_ms)} + {duration(s.mean_after_ms)}",
        )
        for s in report.sources
    ]
    figures = [timing_cells(s) for s in report.sources]
    header = ["source", "requests", "first useful p50", "p95", "first token p50", "total p50"]
    return "\n".join(
        [
            "<h2>Where the time goes</h2>",
            '<p class="note">Mean per request: waiting for the first useful content, then '
            "streaming the rest of the answer.</p>",
            legend([(WAIT_COLOUR, "waiting"), (STREAM_COLOUR, "streaming")]),
            bar_chart(rows, title="where the time goes"),
            _table([*header, "total p95"], figures),
        ]
    )


def _savings(report: Report) -> str:
    s = report.savings
    rows = [
        BarRow(t.tier, [Segment(t.tokens, WAIT_COLOUR, f"{t.tokens} tokens")], f"{t.tokens:,}")
        for t in s.tiers
    ]
    return "\n".join(
        [
            "<h2>Savings</h2>",
            _tiles(
                [
                    (share(s.from_cache, s.requests), f"answered from cache ({s.from_cache})"),
                    (f"{s.tokens_saved:,}", "upstream tokens saved"),
                    (usd(s.usd_saved), "money saved"),
                    (usd(s.usd_spent), "money spent on computed answers"),
                ]
            ),
            '<p class="note">Tokens saved per cache tier. A hit saves its model\'s mean '
            "computed cost in this window; unknown when no model in the log has a price "
            "(models.*.price).</p>",
            bar_chart(rows, title="tokens saved per tier") if rows else "<p>No cache hits.</p>",
        ]
    )


def _endings(report: Report) -> str:
    e = report.endings
    codes = _table(["error code", "requests"], [[c, str(n)] for c, n in e.errors_by_code.items()])
    return "\n".join(
        [
            "<h2>Abandonment and errors</h2>",
            _tiles(
                [
                    (share(e.abandoned, e.requests), f"abandoned ({e.abandoned})"),
                    (str(e.abandoned_before_content), "left before any content"),
                    (duration(e.abandoned_after.p50_ms), "median stay before leaving"),
                    (share(e.errors, e.requests), f"errors ({e.errors})"),
                ]
            ),
            codes if e.errors_by_code else "",
        ]
    )


def _slow(report: Report) -> str:
    title = "<h2>Slow paths that matter most</h2>"
    note = (
        f'<p class="note">Ranked by user-seconds waited beyond the {FLOW_LIMIT_S:g} s flow limit, '
        "Σ max(0, wait - 1 s) over a path's requests: how many requests x how far over. "
        "It is the waiting that making the path fast enough would remove.</p>"
    )
    if not report.slow_paths:
        return title + "<p>None: every request showed useful content within 1 s.</p>"
    rows = [
        BarRow(
            f"{rank}. {p.name}",
            [Segment(p.seconds_beyond_flow_limit, SLOW_COLOUR, f"{p.over_flow_limit} requests")],
            f"{duration(p.seconds_beyond_flow_limit * 1000)} · {p.over_flow_limit} of {p.requests}",
        )
        for rank, p in enumerate(report.slow_paths, start=1)
    ]
    return "\n".join([title, note, bar_chart(rows, title="slow paths")])


def _band_legend() -> str:
    return legend([(colour, band) for band, colour in BAND_COLOURS.items()])


def _histogram(report: Report) -> str:
    columns = [
        Column(
            b.label,
            [Segment(b.requests, BAND_COLOURS[b.band], f"{b.label}: {b.requests} ({b.band})")],
            str(b.requests) if b.requests else "",
        )
        for b in report.histogram
    ]
    return "\n".join(
        [
            "<h2>Wait histogram</h2>",
            '<p class="note">Time to first useful content; each bin lies inside one perception '
            "band (its colour).</p>",
            _band_legend(),
            column_chart(columns, title="wait histogram", width=BAR_WIDTH_PX),
        ]
    )


def _timeline(report: Report) -> str:
    columns = [
        Column(
            clock(b.start_ts),
            [
                Segment(count, BAND_COLOURS[band], f"{band}: {count}")
                for band, count in b.bands.items()
            ],
            str(b.requests),
        )
        for b in report.timeline
    ]
    rows = [
        [clock(b.start_ts), str(b.requests), duration(b.wait.p50_ms), duration(b.wait.p95_ms)]
        for b in report.timeline
    ]
    return "\n".join(
        [
            "<h2>Over time</h2>",
            '<p class="note">The window in equal intervals (UTC, each labelled by its start): '
            "requests per interval, stacked by perception band.</p>",
            _band_legend(),
            column_chart(columns, title="requests over time", width=BAR_WIDTH_PX),
            _table(["from", "requests", "p50 wait", "p95 wait"], rows),
        ]
    )


def _preliminary(report: Report) -> str:
    help_ = report.preliminary
    title = "<h2>Preliminary answers</h2>"
    if help_ is None or not help_.helped:
        return title + "<p>No answer showed a preliminary before its refined text.</p>"
    moves = [[move, str(count)] for move, count in help_.band_moves.items()]
    return "\n".join(
        [
            title,
            '<p class="note">A draft or a near-match on screen before the refined answer\'s '
            "first token; earlier by: first refined token (or the end) minus first useful "
            "content.</p>",
            _tiles(
                [
                    (share(help_.helped, help_.requests), f"helped ({help_.helped})"),
                    (duration(help_.gain.p50_ms), "earlier, p50"),
                    (duration(help_.gain.p95_ms), "earlier, p95"),
                    (str(help_.better_band), "moved into a better band"),
                ]
            ),
            _table(["band before → after", "answers"], moves) if moves else "",
        ]
    )


def _models(report: Report) -> str:
    rows = [_band_row(m.model, m.bands, m.requests) for m in report.models]
    figures = [
        [
            m.model,
            str(m.requests),
            duration(m.wait.p50_ms),
            duration(m.wait.p95_ms),
            share(m.from_cache, m.requests),
            share(m.helped_by_preliminary, m.requests),
            share(m.errors, m.requests),
            usd(m.usd_spent),
        ]
        for m in report.models
    ]
    header = ["model", "requests", "p50 wait", "p95 wait", "from cache", "preliminary"]
    return "\n".join(
        [
            "<h2>Per model</h2>",
            _band_legend(),
            bar_chart([_scaled_to_share(row) for row in rows], scale=1.0, title="per model"),
            _table([*header, "errors", "spent"], figures),
        ]
    )
