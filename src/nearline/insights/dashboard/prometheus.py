"""Read a Prometheus registry back as plain figures: sums, breakdowns, histogram quantiles."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

Labels = Mapping[str, str]
LabelFilter = Callable[[Labels], bool]


class Samples:
    """Every sample of a registry (or of a scraped page), by sample name."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in families:
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Samples:
        return cls(registry.collect())

    def series(self, name: str) -> list[tuple[Labels, float]]:
        return self._by_name.get(name, [])

    def total(self, name: str, where: LabelFilter | None = None) -> float:
        return sum(value for labels, value in self.series(name) if where is None or where(labels))

    def by_label(self, name: str, label: str, where: LabelFilter | None = None) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self.series(name):
            if where is None or where(labels):
                sums[labels.get(label, "")] += value
        return dict(sorted(sums.items()))

    def histogram(self, name: str, where: LabelFilter | None = None) -> Histogram:
        """The histogram ``name`` summed over the series ``where`` selects."""
        cumulative: dict[float, float] = defaultdict(float)
        for labels, value in self.series(f"{name}_bucket"):
            if where is None or where(labels):
                cumulative[float(labels["le"])] += value
        bounds = sorted(cumulative)
        return Histogram(
            bounds=tuple(bounds),
            cumulative=tuple(cumulative[b] for b in bounds),
            sum=self.total(f"{name}_sum", where),
        )


@dataclass(frozen=True, slots=True)
class Histogram:
    bounds: tuple[float, ...]  # bucket upper bounds, ascending, the last is +Inf
    cumulative: tuple[float, ...]  # observations at or below each bound
    sum: float

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def per_bucket(self) -> list[float]:
        return [c - p for p, c in zip((0.0, *self.cumulative), self.cumulative, strict=False)]

    def quantile(self, share: float) -> float | None:
        """Estimated as Prometheus' ``histogram_quantile`` does: linear within the bucket the
        rank falls in; the last finite bound when it falls in the +Inf bucket."""
        if not self.count:
            return None
        rank = share * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= rank and count > lower_count:
                if math.isinf(bound):
                    return lower_bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                    count - lower_count
                )
            lower_bound, lower_count = bound, count
        return lower_bound
