"""``GET /dashboard/data``: the gateway's metrics registry as the figures the page draws.

Everything comes from the app's own ``GatewayMetrics`` registry (the same numbers as
``/metrics``), so the page and Prometheus never disagree — plus, after a restart, the request
log's earlier rows replayed into a registry of their own (``history.py``; ``restored`` says
how many). Reading it is cheap: the label sets
are bounded (models, sources, tiers, error codes).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from nearline.core.bands import BAND_LIMITS
from nearline.gateway.telemetry.metrics import GatewayMetrics
from nearline.insights.dashboard.history import Restored
from nearline.insights.dashboard.prometheus import Histogram, LabelFilter, Samples
from nearline.insights.dashboard.worker_lag import WorkerLag

FIRST_USEFUL = "nearline_time_to_first_useful_content_seconds"
FIRST_TOKEN = "nearline_time_to_first_token_seconds"
DURATION = "nearline_request_duration_seconds"


def dashboard_data(
    metrics: GatewayMetrics,
    workers: list[WorkerLag] | None = None,
    restored: Restored | None = None,
) -> dict[str, Any]:
    """The live figures, plus the request log's rows from before this process when
    ``restored`` holds them (``history.py``: the page survives a restart)."""
    families = list(metrics.registry.collect())
    if restored is not None:
        families += restored.metrics.registry.collect()
    samples = Samples(families)
    outcomes = samples.by_label("nearline_requests_total", "outcome")
    answered = sum(outcomes.values())
    hits = samples.by_label("nearline_cache_hits_total", "tier")
    misses = samples.total("nearline_cache_misses_total")
    bands = samples.by_label("nearline_requests_by_perception_band_total", "band")
    return {
        "requests": {
            "total": answered,
            "ok": outcomes.get("ok", 0.0),
            "error": outcomes.get("error", 0.0),
            "abandoned": outcomes.get("abandoned", 0.0),
        },
        "first_useful": _distribution(samples.histogram(FIRST_USEFUL)),
        "first_useful_by_source": {
            source: _spread(samples.histogram(FIRST_USEFUL, _label_is("source", source)))
            for source in samples.by_label(f"{FIRST_USEFUL}_count", "source")
        },
        "first_token": _spread(samples.histogram(FIRST_TOKEN)),
        "duration": _spread(samples.histogram(DURATION)),
        "bands": [
            {
                "band": limit.band.value,
                "upper_s": None if limit.upper_s == float("inf") else limit.upper_s,
                "count": bands.get(limit.band.value, 0.0),
            }
            for limit in BAND_LIMITS
        ],
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_share": _share(sum(hits.values()), sum(hits.values()) + misses),
        },
        "saved": {
            "tokens": samples.total("nearline_tokens_saved_total"),
            "tokens_by_tier": samples.by_label("nearline_tokens_saved_total", "tier"),
            "usd": samples.total("nearline_money_saved_usd_total"),
            "usd_by_tier": samples.by_label("nearline_money_saved_usd_total", "tier"),
        },
        "abandoned": {
            "count": samples.total("nearline_abandoned_total"),
            "share": _share(samples.total("nearline_abandoned_total"), answered),
        },
        "errors": {
            "answers": outcomes.get("error", 0.0),
            "share": _share(outcomes.get("error", 0.0), answered),
            "by_code": samples.by_label("nearline_upstream_errors_total", "code"),
        },
        "workers": [asdict(worker) for worker in workers or []],
        "restored": {
            "answers": 0 if restored is None else restored.answers,
            "since_ts": None if restored is None else restored.since_ts,
        },
    }


def _label_is(name: str, value: str) -> LabelFilter:
    return lambda labels: labels.get(name) == value


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _spread(histogram: Histogram) -> dict[str, float | None]:
    return {
        "count": histogram.count,
        "p50_s": histogram.quantile(0.5),
        "p95_s": histogram.quantile(0.95),
    }


def _distribution(histogram: Histogram) -> dict[str, Any]:
    """Buckets as the page draws them: per bucket (not cumulative), +Inf as ``le: null``."""
    return {
        **_spread(histogram),
        "sum_s": histogram.sum,
        "buckets": [
            {"le": None if bound == float("inf") else bound, "count": count}
            for bound, count in zip(histogram.bounds, histogram.per_bucket(), strict=True)
        ],
        "cumulative": list(histogram.cumulative),
    }
