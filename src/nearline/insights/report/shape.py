"""The report's figures over time and per model, the wait histogram and what preliminaries did.

Pure, like ``figures``. Definitions (docs/report.md):

* **timeline**: the window from the first to the last request cut into equal intervals
  (at most ``TIMELINE_BUCKETS``); each interval's requests by band and their p50/p95 wait;
* **histogram**: waits in fixed bins whose edges include the band limits (100 ms, 1 s,
  10 s), so every bin lies in one band; requests without useful content are a bin of their own;
* a **preliminary helped** an answer when its first useful content came before its first
  refined token (a draft or a near-match was on screen first), or when the preliminary was all
  the user got; by how much: the first refined token (or the end, without one) minus the first
  useful content. ``better_band`` counts the answers whose wait moved into a better band
  because of it;
* **models**: the same figures per model, every source together.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nearline.core.bands import band_of
from nearline.gateway.telemetry.requestlog import RequestRecord
from nearline.insights.report.figures import (
    BANDS,
    NO_CONTENT,
    Spread,
    band_name,
    from_cache,
    wait_ms,
)

TIMELINE_BUCKETS = 12
HISTOGRAM_EDGES_MS = (0.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0)


@dataclass(frozen=True, slots=True)
class TimeBucket:
    start_ts: float
    end_ts: float
    requests: int
    bands: dict[str, int]  # every band in BANDS, then NO_CONTENT
    wait: Spread


@dataclass(frozen=True, slots=True)
class HistogramBin:
    low_ms: float | None  # None: the "no content" bin
    high_ms: float | None  # None: no upper limit (or the "no content" bin)
    band: str
    requests: int

    @property
    def label(self) -> str:
        if self.low_ms is None:
            return NO_CONTENT
        if self.high_ms is None:
            return f"> {_ms(self.low_ms)}"
        return f"≤ {_ms(self.high_ms)}"


@dataclass(frozen=True, slots=True)
class PreliminaryHelp:
    requests: int
    helped: int  # answers whose first useful content was a preliminary
    gain: Spread  # how much earlier the first useful content came, milliseconds
    mean_gain_ms: float | None
    better_band: int  # answers moved into a better perception band by it
    band_moves: dict[str, int]  # "attention kept → flow kept": count

    @property
    def share(self) -> float:
        return self.helped / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class ModelFigures:
    model: str
    requests: int
    bands: dict[str, int]
    wait: Spread
    from_cache: int
    helped_by_preliminary: int
    errors: int
    abandoned: int
    usd_spent: float | None


def timeline(rows: Sequence[RequestRecord], buckets: int = TIMELINE_BUCKETS) -> list[TimeBucket]:
    if not rows:
        return []
    first, last = min(r.ts for r in rows), max(r.ts for r in rows)
    count = max(1, min(buckets, len(rows)))
    width = (last - first) / count or 1.0
    groups: list[list[RequestRecord]] = [[] for _ in range(count)]
    for row in rows:
        groups[min(count - 1, int((row.ts - first) / width))].append(row)
    return [
        TimeBucket(
            start_ts=first + index * width,
            end_ts=first + (index + 1) * width,
            requests=len(group),
            bands=_bands(group),
            wait=Spread.of([wait_ms(r) for r in group]),
        )
        for index, group in enumerate(groups)
    ]


def histogram(rows: Sequence[RequestRecord]) -> list[HistogramBin]:
    waits = [r.time_to_first_useful_ms for r in rows if r.time_to_first_useful_ms is not None]
    bins = []
    bounds = [*HISTOGRAM_EDGES_MS, None]
    for low, high in itertools.pairwise(bounds):
        assert low is not None
        inside = sum(w > low and (high is None or w <= high) for w in waits)
        if low == 0.0:
            inside += sum(w <= 0.0 for w in waits)
        band = band_of((high if high is not None else low + 1) / 1000).value
        bins.append(HistogramBin(low, high, band, inside))
    bins.append(HistogramBin(None, None, NO_CONTENT, len(rows) - len(waits)))
    return bins


def preliminary_help(rows: Sequence[RequestRecord]) -> PreliminaryHelp:
    gains: list[float] = []
    moves: Counter[str] = Counter()
    for row in rows:
        gain = _gain_ms(row)
        if gain is None:
            continue
        gains.append(gain)
        assert row.time_to_first_useful_ms is not None
        before = band_of((row.time_to_first_useful_ms + gain) / 1000).value
        after = band_of(row.time_to_first_useful_ms / 1000).value
        if before != after:
            moves[f"{before} → {after}"] += 1
    return PreliminaryHelp(
        requests=len(rows),
        helped=len(gains),
        gain=Spread.of(gains),
        mean_gain_ms=sum(gains) / len(gains) if gains else None,
        better_band=sum(moves.values()),
        band_moves=dict(moves.most_common()),
    )


def per_model(rows: Sequence[RequestRecord]) -> list[ModelFigures]:
    models: dict[str, list[RequestRecord]] = {}
    for row in rows:
        models.setdefault(row.model, []).append(row)
    figures = []
    for model, group in models.items():
        spent = [r.cost_usd for r in group if not from_cache(r) and r.cost_usd is not None]
        figures.append(
            ModelFigures(
                model=model,
                requests=len(group),
                bands=_bands(group),
                wait=Spread.of([wait_ms(r) for r in group]),
                from_cache=sum(from_cache(r) and r.outcome != "error" for r in group),
                helped_by_preliminary=sum(_gain_ms(r) is not None for r in group),
                errors=sum(r.outcome == "error" for r in group),
                abandoned=sum(r.outcome == "abandoned" for r in group),
                usd_spent=sum(spent) if spent else None,
            )
        )
    figures.sort(key=lambda m: (-m.requests, m.model))
    return figures


def _gain_ms(row: RequestRecord) -> float | None:
    """How much earlier a preliminary put useful content on screen; None: it did not."""
    useful = row.time_to_first_useful_ms
    if useful is None:
        return None
    refined = row.time_to_first_token_ms
    if refined is None:  # the preliminary was all the user got (the client left, a fallback)
        refined = row.total_ms
    return refined - useful if refined > useful else None


def _bands(rows: Sequence[RequestRecord]) -> dict[str, int]:
    counts = Counter(band_name(row) for row in rows)
    return {band: counts[band] for band in (*BANDS, NO_CONTENT)}


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"
