"""What routing tells the outside world: attempts, hedges, fallbacks, breakers, escalations.

``RoutingTelemetry`` is the small interface the routing code calls. ``RoutingCounters``
implements it: it counts in memory (tests, benchmarks and ``snapshot()`` read those) and,
given the gateway's Prometheus registry, also feeds ``nearline_routing_*`` metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry

from nearline.gateway.routing.breaker import BreakerState
from nearline.gateway.telemetry.metrics import RoutingMetrics

AttemptKind = Literal["first", "hedge", "fallback"]
CascadeOutcome = Literal["kept", "escalated"]
PlanOutcome = Literal["planned", "fallback", "failed"]

_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class RoutingTelemetry(Protocol):
    def attempt(self, tier: str, deployment: str, kind: AttemptKind) -> None: ...

    def answered(self, tier: str, deployment: str) -> None: ...

    def cancelled(self, tier: str, deployment: str) -> None: ...

    def failed_before_first_token(self, tier: str, deployment: str, code: str) -> None: ...

    def tier_fallback(self, tier: str, to_tier: str) -> None: ...

    def breaker_changed(self, deployment: str, state: BreakerState) -> None: ...

    def cascade(self, cascade: str, outcome: CascadeOutcome) -> None: ...

    def plan_call(
        self, plan: str, role: str, outcome: str, latency_s: float, cost_usd: float
    ) -> None: ...

    def plan_answer(self, plan: str, outcome: PlanOutcome, reason: str) -> None: ...


class RoutingCounters:
    """In-memory counts, optionally mirrored to Prometheus."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._metrics = RoutingMetrics(registry) if registry is not None else None
        self.attempts: Counter[tuple[str, str, AttemptKind]] = Counter()
        self.answers: Counter[tuple[str, str]] = Counter()
        self.cancellations: Counter[tuple[str, str]] = Counter()
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.tier_fallbacks: Counter[tuple[str, str]] = Counter()
        self.breaker_transitions: list[tuple[str, BreakerState]] = []
        self.cascades: Counter[tuple[str, CascadeOutcome]] = Counter()
        self.plan_calls: Counter[tuple[str, str, str]] = Counter()  # plan, role, outcome
        self.plan_cost_usd: dict[tuple[str, str], float] = {}  # plan, role
        self.plan_answers: Counter[tuple[str, PlanOutcome, str]] = Counter()

    def attempt(self, tier: str, deployment: str, kind: AttemptKind) -> None:
        self.attempts[tier, deployment, kind] += 1
        if self._metrics is not None:
            self._metrics.attempts.labels(tier=tier, deployment=deployment, kind=kind).inc()

    def answered(self, tier: str, deployment: str) -> None:
        self.answers[tier, deployment] += 1
        if self._metrics is not None:
            self._metrics.answered.labels(tier=tier, deployment=deployment).inc()

    def cancelled(self, tier: str, deployment: str) -> None:
        self.cancellations[tier, deployment] += 1
        if self._metrics is not None:
            self._metrics.hedges_cancelled.labels(tier=tier, deployment=deployment).inc()

    def failed_before_first_token(self, tier: str, deployment: str, code: str) -> None:
        self.failures[tier, deployment, code] += 1
        if self._metrics is not None:
            self._metrics.fallbacks.labels(tier=tier, deployment=deployment, code=code).inc()

    def tier_fallback(self, tier: str, to_tier: str) -> None:
        self.tier_fallbacks[tier, to_tier] += 1
        if self._metrics is not None:
            self._metrics.tier_fallbacks.labels(tier=tier, to_tier=to_tier).inc()

    def breaker_changed(self, deployment: str, state: BreakerState) -> None:
        self.breaker_transitions.append((deployment, state))
        if self._metrics is not None:
            self._metrics.breaker_state.labels(deployment=deployment).set(_BREAKER_GAUGE[state])
            self._metrics.breaker_transitions.labels(deployment=deployment, state=state.value).inc()

    def cascade(self, cascade: str, outcome: CascadeOutcome) -> None:
        self.cascades[cascade, outcome] += 1
        if self._metrics is not None:
            self._metrics.cascade_outcomes.labels(cascade=cascade, outcome=outcome).inc()

    def plan_call(
        self, plan: str, role: str, outcome: str, latency_s: float, cost_usd: float
    ) -> None:
        self.plan_calls[plan, role, outcome] += 1
        self.plan_cost_usd[plan, role] = self.plan_cost_usd.get((plan, role), 0.0) + cost_usd
        if self._metrics is not None:
            self._metrics.plan_calls.labels(plan=plan, role=role, outcome=outcome).inc()
            self._metrics.plan_call_seconds.labels(plan=plan, role=role).observe(latency_s)
            self._metrics.plan_cost.labels(plan=plan, role=role).inc(cost_usd)

    def plan_answer(self, plan: str, outcome: PlanOutcome, reason: str) -> None:
        self.plan_answers[plan, outcome, reason] += 1
        if self._metrics is not None:
            self._metrics.plan_answers.labels(plan=plan, outcome=outcome, reason=reason).inc()

    def hedges(self, tier: str | None = None) -> int:
        return sum(
            n for (t, _, kind), n in self.attempts.items() if kind == "hedge" and tier in (None, t)
        )

    def fallbacks(self, tier: str | None = None) -> int:
        return sum(
            n
            for (t, _, kind), n in self.attempts.items()
            if kind == "fallback" and tier in (None, t)
        )

    def escalations(self, cascade: str | None = None) -> int:
        return sum(
            n
            for (c, outcome), n in self.cascades.items()
            if outcome == "escalated" and cascade in (None, c)
        )
