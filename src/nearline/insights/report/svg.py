"""Inline SVG charts for the HTML report: horizontal bars, stacked or single. No assets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

ROW_HEIGHT = 38  # a label line, then the bar
BAR_HEIGHT = 16
BAR_WIDTH = 640
VALUE_WIDTH = 220


@dataclass(frozen=True, slots=True)
class Segment:
    value: float
    colour: str
    title: str  # shown on hover


@dataclass(frozen=True, slots=True)
class BarRow:
    label: str
    segments: Sequence[Segment]
    caption: str  # printed right of the bar


def bar_chart(rows: Sequence[BarRow], scale: float | None = None, title: str = "") -> str:
    """One horizontal bar per row, its segments stacked; ``scale`` is the value of a full bar
    (default: the longest row)."""
    longest = scale or max((sum(s.value for s in row.segments) for row in rows), default=0.0)
    longest = longest or 1.0
    width = BAR_WIDTH + VALUE_WIDTH
    height = ROW_HEIGHT * len(rows) + 4
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for index, row in enumerate(rows):
        y = index * ROW_HEIGHT + 2
        parts.append(f'<text x="0" y="{y + 12}">{escape(row.label)}</text>')
        x = 0.0
        for segment in row.segments:
            length = BAR_WIDTH * segment.value / longest
            if length > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y + 17}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                    f'fill="{segment.colour}"><title>{escape(segment.title)}</title></rect>'
                )
            x += length
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 30}">{escape(row.caption)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def legend(items: Sequence[tuple[str, str]]) -> str:
    """``(colour, label)`` pairs as a line of swatches."""
    return (
        '<p class="legend">'
        + " ".join(
            f'<span><svg width="12" height="12"><rect width="12" height="12" fill="{colour}"/>'
            f"</svg> {escape(label)}</span>"
            for colour, label in items
        )
        + "</p>"
    )


COLUMN_AREA_HEIGHT = 160
COLUMN_LABEL_HEIGHT = 34


@dataclass(frozen=True, slots=True)
class Column:
    label: str  # under the column (a time, a bin)
    segments: Sequence[Segment]  # stacked from the bottom
    caption: str = ""  # above the column


def column_chart(columns: Sequence[Column], title: str = "", width: int = BAR_WIDTH) -> str:
    """Vertical columns, their segments stacked, over a labelled axis (time or bins)."""
    tallest = max((sum(s.value for s in c.segments) for c in columns), default=0.0) or 1.0
    step = width / max(1, len(columns))
    height = COLUMN_AREA_HEIGHT + COLUMN_LABEL_HEIGHT + 16
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="0" y1="{COLUMN_AREA_HEIGHT + 16}" x2="{width}" '
        f'y2="{COLUMN_AREA_HEIGHT + 16}" stroke="#999"/>',
    ]
    for index, column in enumerate(columns):
        x = index * step + step * 0.1
        y = float(COLUMN_AREA_HEIGHT + 16)
        for segment in column.segments:
            length = COLUMN_AREA_HEIGHT * segment.value / tallest
            if length > 0:
                y -= length
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{length:.1f}" fill="{segment.colour}">'
                    f"<title>{escape(segment.title)}</title></rect>"
                )
        centre = x + step * 0.4
        if column.caption:
            parts.append(
                f'<text x="{centre:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                f"{escape(column.caption)}</text>"
            )
        parts.append(
            f'<text x="{centre:.1f}" y="{COLUMN_AREA_HEIGHT + 32}" text-anchor="middle">'
            f"{escape(column.label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
