"""The ``routing:`` section: model tiers, their deployments, and how requests reach them.

A *tier* (e.g. light / standard / frontier) is an ordered list of deployments — a provider
from ``providers:`` (or ``local``) plus the model name it serves under and its price. A tier
is itself a provider: a public model in ``models:`` may name a tier (or a cascade) as its
``provider``. Every key is checked; unknown keys stop start-up.

```yaml
routing:
  tiers:
    light:
      deployments:
        - {provider: local, upstream_model: smollm2, input_per_mtok: 0, output_per_mtok: 0}
    frontier:
      ttft_budget_s: 0.8          # hedge to the next deployment after this long without a token
      timeout_s: 30               # the whole answer's deadline, passed to upstream timeouts
      fallback_tier: light        # when every deployment fails before its first token
      deployments:
        - {provider: openai-east, upstream_model: gpt-x, input_per_mtok: 2.5, output_per_mtok: 10}
        - {provider: openai-west, upstream_model: gpt-x, input_per_mtok: 2.5, output_per_mtok: 10}
  cascades:
    auto: {cheap: light, strong: frontier, threshold: 0.6}
  plans:                          # a model names one as provider: "plan:deep"
    deep: {planner: frontier, executor: light, max_steps: 4, parallel: true}
  rules:
    - {tier: frontier, when: {headers: {x-nearline-tier: frontier}}}
    - {tier: light, when: {tenants: [free]}}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from nearline.core.model import FrozenStrict as _Strict


class DeploymentSettings(_Strict):
    """One place a tier can send a request: a provider, the model it serves, its price."""

    provider: str = Field(min_length=1)
    upstream_model: str = Field(min_length=1)
    input_per_mtok: float = Field(default=0.0, ge=0)  # USD per million prompt tokens
    output_per_mtok: float = Field(default=0.0, ge=0)  # USD per million completion tokens
    name: str | None = None  # defaults to "provider/upstream_model"

    @property
    def label(self) -> str:
        return self.name or f"{self.provider}/{self.upstream_model}"


class HedgeSettings(_Strict):
    """Start the same request on the next deployment when the first is slow to its first token.

    The hedge fires after ``min(TTFT budget, the deployment's observed TTFT percentile)``
    (p95 by default); the percentile is used once ``min_samples`` TTFTs have been observed.
    The first token wins; the others are cancelled (their streams closed, so their
    connections close). A loser's wait counts as a sample: a lower bound of its TTFT.
    """

    enabled: bool = True
    use_observed_p95: bool = True  # False: hedge on the budget alone
    percentile: float = Field(default=0.95, gt=0, lt=1)
    min_samples: int = Field(default=100, ge=1)  # fewer samples say little about a p95
    max_attempts: int = Field(default=2, ge=1)  # deployments racing at once, the first included


class BreakerSettings(_Strict):
    """Take a failing deployment out; after ``cooldown_s`` let one probe through."""

    consecutive_failures: int = Field(default=5, ge=1)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=20, ge=1)  # the last N outcomes the ratio is taken over
    min_calls: int = Field(default=10, ge=1)  # the ratio applies once the window holds this many
    cooldown_s: float = Field(default=10.0, gt=0)


class TierSettings(_Strict):
    deployments: list[DeploymentSettings] = Field(min_length=1)
    ttft_budget_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    fallback_tier: str | None = None
    hedge: HedgeSettings = Field(default_factory=HedgeSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)


class CascadeSettings(_Strict):
    """Answer with ``cheap``; escalate to ``strong`` when confidence is below ``threshold``.

    ``confidence: heuristic`` scores the cheap answer from what it says (see
    ``gateway/routing/confidence.py``); ``verifier`` asks ``verifier_tier`` whether it is right.
    """

    cheap: str
    strong: str
    threshold: float = Field(default=0.5, ge=0, le=1)
    confidence: Literal["heuristic", "verifier"] = "heuristic"
    verifier_tier: str | None = None

    @model_validator(mode="after")
    def _verifier_needs_a_tier(self) -> CascadeSettings:
        if self.confidence == "verifier" and self.verifier_tier is None:
            raise ValueError("confidence: verifier needs verifier_tier")
        return self


PLAN_PREFIX = "plan:"
"""A model's ``provider`` naming a plan: ``plan:<name>`` (``routing.plans.<name>``)."""


class PlanSettings(_Strict):
    """Plan-and-Execute as a model (``gateway/plan/``): ``planner`` writes at most
    ``max_steps`` numbered steps, ``executor`` carries each out (in order, each seeing the
    results so far, or all at once with ``parallel``), and ``synthesise`` (a tier, or none:
    the step results are the answer) writes the final answer from them.

    A planner answer with no numbered step, a step that fails or outlasts
    ``step_timeout_s``, a plan that outlasts ``timeout_s`` or spends more than
    ``max_cost_usd`` before its final answer: then ``on_failure: fallback`` answers with
    ``fallback`` alone (default: the planner's tier), ``error`` fails the request. Never a
    half answer.
    """

    planner: str
    executor: str
    synthesise: str | None = None
    max_steps: int = Field(default=5, ge=1, le=20)
    parallel: bool = False
    plan_max_tokens: int = Field(default=256, ge=1)
    step_max_tokens: int = Field(default=512, ge=1)
    step_timeout_s: float | None = Field(default=60.0, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)  # planner + steps, before the answer
    max_cost_usd: float | None = Field(default=None, gt=0)  # planner + steps
    on_failure: Literal["fallback", "error"] = "fallback"
    fallback: str | None = None  # the tier that answers alone; None: the planner's

    @property
    def fallback_tier(self) -> str:
        return self.fallback or self.planner

    @property
    def parts(self) -> list[str]:
        """The tiers this plan calls."""
        names = [self.planner, self.executor, self.synthesise]
        if self.on_failure == "fallback":
            names.append(self.fallback_tier)
        return [name for name in names if name is not None]


class RuleConditions(_Strict):
    """Every condition given must hold (AND); a rule with no conditions always matches."""

    headers: dict[str, str] = Field(default_factory=dict)  # name (any case) → exact value
    models: list[str] | None = None
    tenants: list[str] | None = None
    tools: bool | None = None  # the request asks for tools
    stream: bool | None = None
    min_prompt_chars: int | None = Field(default=None, ge=0)
    max_prompt_chars: int | None = Field(default=None, ge=0)
    min_max_tokens: int | None = Field(default=None, ge=1)  # max_tokens asked ≥ this
    max_temperature: float | None = Field(default=None, ge=0)


class RuleSettings(_Strict):
    tier: str
    when: RuleConditions = Field(default_factory=RuleConditions)


class LearnedRoutingSettings(_Strict):
    """The learned router (``gateway/routing/learned.py``): consulted when no rule matched."""

    strong: str
    weak: str
    threshold: float | None = Field(default=None, ge=0, le=1)  # None: the file's default
    models: list[str] | None = None  # only for these public models (None: all)
    path: Path | None = None  # None: the router file shipped with nearline


class RoutingSettings(_Strict):
    tiers: dict[str, TierSettings] = Field(default_factory=dict)
    cascades: dict[str, CascadeSettings] = Field(default_factory=dict)
    plans: dict[str, PlanSettings] = Field(default_factory=dict)
    rules: list[RuleSettings] = Field(default_factory=list)
    learned: LearnedRoutingSettings | None = None

    @property
    def routable_names(self) -> set[str]:
        """Names a model route or a rule may use as its provider: tiers, cascades and
        ``plan:<name>`` for each plan."""
        return set(self.tiers) | set(self.cascades) | {PLAN_PREFIX + name for name in self.plans}

    def plan_named(self, provider: str) -> PlanSettings | None:
        """The plan ``provider`` names (``plan:<name>``), if it names one."""
        if not provider.startswith(PLAN_PREFIX):
            return None
        return self.plans.get(provider.removeprefix(PLAN_PREFIX))

    @model_validator(mode="after")
    def _references_resolve(self) -> RoutingSettings:
        clash = set(self.tiers) & set(self.cascades)
        if clash:
            raise ValueError(f"routing: {sorted(clash)} name both a tier and a cascade")
        for name, tier in self.tiers.items():
            if tier.fallback_tier is not None and tier.fallback_tier not in self.tiers:
                raise ValueError(
                    f"routing.tiers.{name}.fallback_tier: unknown tier {tier.fallback_tier!r}"
                )
            labels = [deployment.label for deployment in tier.deployments]
            if len(set(labels)) != len(labels):
                raise ValueError(f"routing.tiers.{name}.deployments: names must be unique")
        for name in self.tiers:
            self.fallback_chain(name)  # raises on a cycle
        for name, cascade in self.cascades.items():
            for role in ("cheap", "strong", "verifier_tier"):
                tier = getattr(cascade, role)
                if tier is not None and tier not in self.tiers:
                    raise ValueError(f"routing.cascades.{name}.{role}: unknown tier {tier!r}")
        for name, plan in self.plans.items():
            for role in ("planner", "executor", "synthesise", "fallback"):
                tier = getattr(plan, role)
                if tier is not None and tier not in self.tiers:
                    raise ValueError(f"routing.plans.{name}.{role}: unknown tier {tier!r}")
        for index, rule in enumerate(self.rules):
            if rule.tier not in self.routable_names:
                raise ValueError(
                    f"routing.rules.{index}.tier: unknown tier or cascade {rule.tier!r}"
                )
        if self.learned is not None:
            for role in ("strong", "weak"):
                if getattr(self.learned, role) not in self.routable_names:
                    raise ValueError(
                        f"routing.learned.{role}: unknown tier or cascade "
                        f"{getattr(self.learned, role)!r}"
                    )
        return self

    @property
    def chosen_names(self) -> set[str]:
        """Tiers and cascades that rules or the learned router may choose."""
        names = {rule.tier for rule in self.rules}
        if self.learned is not None:
            names |= {self.learned.strong, self.learned.weak}
        return names

    def fallback_chain(self, tier: str) -> list[str]:
        """``tier`` and the tiers it falls back to, in order; a cycle is a configuration error."""
        chain = [tier]
        while (following := self.tiers[chain[-1]].fallback_tier) is not None:
            if following in chain:
                raise ValueError(
                    f"routing.tiers.{tier}.fallback_tier: cycle {' -> '.join([*chain, following])}"
                )
            chain.append(following)
        return chain

    def deployment_providers(self) -> dict[str, set[str]]:
        """Provider name → the tiers whose deployments use it (for the config cross-check)."""
        used: dict[str, set[str]] = {}
        for name, tier in self.tiers.items():
            for deployment in tier.deployments:
                used.setdefault(deployment.provider, set()).add(name)
        return used

    def tiers_needed_by(self, names: set[str]) -> set[str]:
        """The tiers the given provider names need: themselves, cascade and plan parts,
        fallbacks."""
        needed: set[str] = set()
        for name in names:
            plan = self.plan_named(name)
            if plan is not None:
                for tier in plan.parts:
                    needed.update(self.fallback_chain(tier))
            elif name in self.cascades:
                cascade = self.cascades[name]
                parts = [cascade.cheap, cascade.strong, cascade.verifier_tier]
                for part in parts:
                    if part is not None:
                        needed.update(self.fallback_chain(part))
            elif name in self.tiers:
                needed.update(self.fallback_chain(name))
        return needed
