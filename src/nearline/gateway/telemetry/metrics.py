"""Prometheus metrics for what users feel, with bounded label sets only.

Labels are limited to configured model names, cache tiers/sources, providers and error
codes — never tenants, prompts or request ids. Each app owns its registry (no globals), so
several gateways can live in one process (tests) without clashing.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from nearline.core.bands import band_of

# Buckets around the perception limits: 100 ms instant, 1 s flow, 10 s attention.
PERCEPTION_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Rows the request log holds from before this moment are not in these counters (the
        # dashboard restores them from the log after a restart).
        self.started_unix = time.time()
        r = self.registry
        self.time_to_first_token = Histogram(
            "nearline_time_to_first_token_seconds",
            "From request received to the first answer token sent.",
            ["model", "source"],
            buckets=PERCEPTION_BUCKETS,
            registry=r,
        )
        self.time_to_first_useful = Histogram(
            "nearline_time_to_first_useful_content_seconds",
            "From request received to the first useful content (preliminary or first token).",
            ["model", "source"],
            buckets=PERCEPTION_BUCKETS,
            registry=r,
        )
        self.total_latency = Histogram(
            "nearline_request_duration_seconds",
            "From request received to the final answer's end, by path (source = what gave the "
            "first useful content: a preliminary's source, or the answer's own).",
            ["model", "source"],
            buckets=PERCEPTION_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "nearline_completion_tokens_per_second",
            "Completion tokens per second after the first token.",
            ["model", "source"],
            buckets=(5, 10, 20, 40, 80, 160, 320, 640, 1280),
            registry=r,
        )
        self.requests = Counter(
            "nearline_requests_total",
            "Answers by how they ended.",
            ["model", "source", "outcome"],
            registry=r,
        )
        self.perception_band = Counter(
            "nearline_requests_by_perception_band_total",
            "Answers by the perception band of their time to first useful content.",
            ["band"],
            registry=r,
        )
        self.cache_hits = Counter(
            "nearline_cache_hits_total", "Answers served by a cache tier.", ["tier"], registry=r
        )
        self.cache_misses = Counter(
            "nearline_cache_misses_total", "Lookups no cache tier could answer.", registry=r
        )
        self.tokens_saved = Counter(
            "nearline_tokens_saved_total",
            "Upstream tokens a cache hit avoided.",
            ["tier", "kind"],
            registry=r,
        )
        self.money_saved = Counter(
            "nearline_money_saved_usd_total",
            "Upstream spend a cache hit avoided (price table).",
            ["tier"],
            registry=r,
        )
        self.spend = Counter(
            "nearline_spend_usd_total",
            "Upstream spend of inference answers (price table), beside money_saved.",
            ["model"],
            registry=r,
        )
        self.abandoned = Counter(
            "nearline_abandoned_total",
            "Clients that left before their answer finished.",
            ["model", "source"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "nearline_upstream_errors_total",
            "Errors answered to clients, by code.",
            ["model", "code"],
            registry=r,
        )
        self.prefetches = Counter(
            "nearline_prefetch_total",
            "Likely next questions answered ahead of time.",
            registry=r,
        )
        self.prefetch_used = Counter(
            "nearline_prefetch_used_total",
            "Requests served from a prefetched answer.",
            registry=r,
        )
        self.preliminaries = Counter(
            "nearline_preliminaries_total",
            "Preliminary answers by what the refinement did to them (replace or confirm).",
            ["action"],
            registry=r,
        )
        # The semantic tier's learned thresholds (gateway/cache/thresholds.py, verify.py).
        self.semantic_hits = Counter(
            "nearline_semantic_hits_total",
            "Semantic hits by the rule that served them: static threshold or learned bound.",
            ["rule"],
            registry=r,
        )
        self.semantic_outcomes = Counter(
            "nearline_semantic_outcomes_total",
            "Cached answers judged against a fresh one: paid (a served match verified) or "
            "free (an unserved candidate vs the answer given), agreed or not.",
            ["kind", "agreed"],
            registry=r,
        )
        self.semantic_agreement = Gauge(
            "nearline_semantic_agreement_rate",
            "Share of judged outcomes whose cached answer agreed with the fresh one.",
            registry=r,
        )
        self.semantic_error_bound = Histogram(
            "nearline_semantic_error_bound",
            "The upper confidence bound on P(wrong) of each semantic hit served on evidence.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            registry=r,
        )
        self.semantic_verification_cost = Counter(
            "nearline_semantic_verification_cost_usd_total",
            "Upstream spend of verifications (served matches also sent to the model).",
            registry=r,
        )
        self.semantic_verification_tokens = Counter(
            "nearline_semantic_verification_tokens_total",
            "Upstream tokens of verifications.",
            ["kind"],
            registry=r,
        )
        self.request_log_dropped = Gauge(
            "nearline_request_log_dropped_rows",
            "Request-log rows dropped because the write buffer was full (requests never are).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "nearline_local_queue_depth", "Requests waiting for the local model.", registry=r
        )
        self._judged = self._agreed = 0

    def observe_semantic_outcome(self, paid: bool, agreed: bool) -> None:
        """One cached answer judged against a fresh one (verify.py's ``on_outcome``)."""
        self.semantic_outcomes.labels(kind="paid" if paid else "free", agreed=str(agreed)).inc()
        self._judged += 1
        self._agreed += agreed
        self.semantic_agreement.set(self._agreed / self._judged)

    def observe_perception(self, seconds: float) -> None:
        self.perception_band.labels(band=band_of(seconds).value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --- Routing: tiers, hedges, fallbacks, circuit breakers, cascades (gateway/routing) ---
# Labels: configured tier, cascade and deployment names, error codes — all bounded by config.


class RoutingMetrics:
    """Routing counters, registered on the gateway's registry (``GatewayMetrics.registry``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.attempts = Counter(
            "nearline_routing_attempts_total",
            "Requests sent to a deployment, by why: first, hedge, or fallback after a failure.",
            ["tier", "deployment", "kind"],
            registry=r,
        )
        self.answered = Counter(
            "nearline_routing_answered_total",
            "Answers by the deployment whose first token won.",
            ["tier", "deployment"],
            registry=r,
        )
        self.hedges_cancelled = Counter(
            "nearline_routing_cancelled_total",
            "Attempts cancelled because another deployment produced the first token.",
            ["tier", "deployment"],
            registry=r,
        )
        self.fallbacks = Counter(
            "nearline_routing_fallbacks_total",
            "Deployments that failed before their first token, by error code.",
            ["tier", "deployment", "code"],
            registry=r,
        )
        self.tier_fallbacks = Counter(
            "nearline_routing_tier_fallbacks_total",
            "Requests handed to the next tier after every deployment of a tier failed.",
            ["tier", "to_tier"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "nearline_routing_breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "nearline_routing_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            ["deployment", "state"],
            registry=r,
        )
        self.cascade_outcomes = Counter(
            "nearline_routing_cascade_total",
            "Cascade answers: kept (the cheap tier was confident) or escalated.",
            ["cascade", "outcome"],
            registry=r,
        )
        self.plan_answers = Counter(
            "nearline_plan_answers_total",
            "Plan answers: planned, fallback (the fallback tier answered alone) or failed; "
            "reason says why a plan fell back.",
            ["plan", "outcome", "reason"],
            registry=r,
        )
        self.plan_calls = Counter(
            "nearline_plan_calls_total",
            "A plan's model calls, by role (plan, step, synthesis, fallback) and outcome "
            "(ok, error, timeout, cancelled).",
            ["plan", "role", "outcome"],
            registry=r,
        )
        self.plan_call_seconds = Histogram(
            "nearline_plan_call_seconds",
            "How long each of a plan's model calls took, by role.",
            ["plan", "role"],
            registry=r,
        )
        self.plan_cost = Counter(
            "nearline_plan_cost_usd_total",
            "What a plan's model calls cost (each at its tier's price), by role.",
            ["plan", "role"],
            registry=r,
        )
