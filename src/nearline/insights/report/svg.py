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
