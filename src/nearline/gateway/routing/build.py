"""Build tiers, cascades, plans and the router from ``routing:`` settings, once, at start-up."""

from __future__ import annotations

from collections.abc import Mapping

from nearline.config.routing import PLAN_PREFIX, CascadeSettings, RoutingSettings
from nearline.core.price import FREE
from nearline.core.provider import Provider
from nearline.gateway.plan.calls import Part
from nearline.gateway.plan.provider import PlanProvider
from nearline.gateway.routing.breaker import BreakerState, CircuitBreaker, StateListener
from nearline.gateway.routing.cascade import CascadeProvider
from nearline.gateway.routing.confidence import (
    ConfidenceScorer,
    HeuristicConfidence,
    VerifierConfidence,
)
from nearline.gateway.routing.deployment import Deployment
from nearline.gateway.routing.rules import LearnedPolicy, Router, RoutingPolicy, RulePolicy
from nearline.gateway.routing.telemetry import RoutingTelemetry
from nearline.gateway.routing.tiered import TieredProvider


def build_tiers(
    settings: RoutingSettings,
    names: set[str],
    providers: Mapping[str, Provider],
    telemetry: RoutingTelemetry,
) -> dict[str, TieredProvider]:
    """The named tiers (and the tiers they fall back to), over already-built providers.

    Each tier has its own deployments, breakers and TTFT windows, even when two tiers name
    the same provider and model.
    """
    tiers: dict[str, TieredProvider] = {}

    def build(name: str) -> TieredProvider:
        if name in tiers:
            return tiers[name]
        tier = settings.tiers[name]
        deployments = [
            Deployment.from_settings(
                deployment,
                providers[deployment.provider],
                CircuitBreaker(
                    tier.breaker, on_change=_reporter(telemetry, f"{name}/{deployment.label}")
                ),
            )
            for deployment in tier.deployments
        ]
        fallback = build(tier.fallback_tier) if tier.fallback_tier is not None else None
        tiers[name] = TieredProvider(name, tier, deployments, telemetry, fallback)
        return tiers[name]

    for name in sorted(settings.tiers_needed_by(names)):
        build(name)
    return tiers


def _reporter(telemetry: RoutingTelemetry, deployment: str) -> StateListener:
    def report(state: BreakerState) -> None:
        telemetry.breaker_changed(deployment, state)

    return report


def build_cascades(
    settings: RoutingSettings,
    names: set[str],
    tiers: Mapping[str, TieredProvider],
    telemetry: RoutingTelemetry,
) -> dict[str, CascadeProvider]:
    return {
        name: CascadeProvider(
            name,
            tiers[cascade.cheap],
            tiers[cascade.strong],
            _scorer(cascade, tiers),
            cascade.threshold,
            telemetry,
        )
        for name, cascade in settings.cascades.items()
        if name in names
    }


def _scorer(cascade: CascadeSettings, tiers: Mapping[str, TieredProvider]) -> ConfidenceScorer:
    if cascade.confidence == "heuristic":
        return HeuristicConfidence()
    assert cascade.verifier_tier is not None  # checked by CascadeSettings
    verifier = tiers[cascade.verifier_tier]
    return VerifierConfidence(verifier, verifier.deployments[0].upstream_model)


def build_plans(
    settings: RoutingSettings,
    names: set[str],
    tiers: Mapping[str, TieredProvider],
    telemetry: RoutingTelemetry,
) -> dict[str, PlanProvider]:
    """``plan:<name>`` → its provider, for each plan ``names`` holds."""
    plans: dict[str, PlanProvider] = {}
    for name, plan in settings.plans.items():
        provider = PLAN_PREFIX + name
        if provider not in names:
            continue
        synthesiser = plan.synthesise
        plans[provider] = PlanProvider(
            provider,
            plan,
            planner=_part(tiers[plan.planner]),
            executor=_part(tiers[plan.executor]),
            fallback=_part(tiers[plan.fallback_tier]),
            synthesiser=None if synthesiser is None else _part(tiers[synthesiser]),
            telemetry=telemetry,
        )
    return plans


def _part(tier: TieredProvider) -> Part:
    """A tier as a plan calls it, priced at its first deployment's price (a plan's costs
    assume a tier's deployments cost the same)."""
    return Part(tier, tier.deployments[0].price if tier.deployments else FREE)


def build_router(settings: RoutingSettings) -> Router:
    policies: list[RoutingPolicy] = [RulePolicy(settings.rules)]
    if settings.learned is not None:
        from nearline.gateway.routing.learned import (
            LearnedRouter,  # loads the embedder: only if asked
        )

        learned = settings.learned
        policies.append(
            LearnedPolicy(
                LearnedRouter.load(learned.path),
                strong=learned.strong,
                weak=learned.weak,
                threshold=learned.threshold,
                models=learned.models,
            )
        )
    return Router(policies)


def provider_reach(settings: RoutingSettings, name: str) -> frozenset[str]:
    """The providers ``name`` may call, to check a tenant's rights against (the catalogue's
    ``reach``): a tier, its chain of fallbacks; a cascade, its cheap, strong and verifier
    tiers and their fallbacks; a plan, its planner, executor, synthesiser and fallback tiers
    and their fallbacks; any other provider, itself."""
    return frozenset(settings.tiers_needed_by({name}) or {name})


def build_routing(
    settings: RoutingSettings,
    used: set[str],
    providers: Mapping[str, Provider],
    telemetry: RoutingTelemetry,
) -> dict[str, Provider]:
    """Every tier, cascade and plan that ``used`` names (plus what they need), by name."""
    names = used | settings.chosen_names
    tiers = build_tiers(settings, names, providers, telemetry)
    cascades = build_cascades(settings, names, tiers, telemetry)
    plans = build_plans(settings, names, tiers, telemetry)
    return {**tiers, **cascades, **plans}
