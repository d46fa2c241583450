"""A deployment: one provider + the model it serves + its price, with its own health.

Each deployment keeps a circuit breaker and a window of its observed times to first token
(their p95 is when a hedge fires).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

from nearline.config.routing import DeploymentSettings
from nearline.core.price import FREE, Price
from nearline.core.provider import Provider, ProviderCall
from nearline.gateway.routing.breaker import CircuitBreaker


class TtftWindow:
    """The last ``size`` observed times to first token, and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..1); ``None`` with no samples."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1]


@dataclass(slots=True)
class Deployment:
    name: str
    provider: Provider
    upstream_model: str
    breaker: CircuitBreaker
    price: Price = FREE
    ttft: TtftWindow = field(default_factory=TtftWindow)

    @classmethod
    def from_settings(
        cls, settings: DeploymentSettings, provider: Provider, breaker: CircuitBreaker
    ) -> Deployment:
        return cls(
            name=settings.label,
            provider=provider,
            upstream_model=settings.upstream_model,
            breaker=breaker,
            price=Price(
                input_per_mtok=settings.input_per_mtok, output_per_mtok=settings.output_per_mtok
            ),
        )

    def call_for(self, call: ProviderCall) -> ProviderCall:
        """The same request, asking this deployment's model."""
        return replace(call, upstream_model=self.upstream_model)
