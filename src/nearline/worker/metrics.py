"""What the worker measures: events by outcome, batch sizes, end-to-end latency, lag.

Prometheus metrics live in an injected ``CollectorRegistry`` (never the global one), so two
workers in one process (tests, the demo) do not collide. ``LatencyWindow`` keeps the last
latencies in memory for percentiles the demo page and the benchmark print.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class LatencyWindow:
    """The last ``size`` latencies (ms), for percentiles."""

    def __init__(self, size: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, milliseconds: float) -> None:
        self._values.append(milliseconds)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, share: float) -> float | None:
        return percentile(self._values, share) if self._values else None


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty), ``share`` in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    latency: dict[str, LatencyWindow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.events = Counter(
            "nearline_worker_events",
            "Entries handled, by outcome",
            ["pipeline", "outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nearline_worker_batch_size",
            "Entries per handler call",
            ["pipeline"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "nearline_worker_handler_seconds",
            "Time in the handler per batch",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "nearline_worker_batch_seconds",
            "From a batch in hand to its acknowledgement: handler, results, dead letters, ack",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            "nearline_worker_end_to_end_seconds",
            "From an entry's publication to its result's publication",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "nearline_worker_dead_letters",
            "Entries dead-lettered, by reason: undecodable, invalid_result, handler_error, "
            "timeout, redelivered (workers died on it), output_refused",
            ["pipeline", "reason"],
            registry=self.registry,
        )
        self.handler_timeouts = Counter(
            "nearline_worker_handler_timeouts",
            "Handler calls abandoned at handler_timeout_ms",
            ["pipeline"],
            registry=self.registry,
        )
        self.output_refused = Counter(
            "nearline_worker_output_refused",
            "Batches whose results or dead letters a full stream refused past output_full_wait_ms",
            ["pipeline", "stream"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "nearline_stream_lag",
            "Entries a group has not been delivered yet",
            ["stream", "group"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "nearline_stream_pending",
            "Entries delivered to a group and not acknowledged",
            ["stream", "group"],
            registry=self.registry,
        )

    def record_latency(self, pipeline: str, milliseconds: float) -> None:
        self.end_to_end_seconds.labels(pipeline).observe(milliseconds / 1000)
        window = self.latency.get(pipeline)
        if window is None:
            window = self.latency[pipeline] = LatencyWindow()
        window.add(milliseconds)
