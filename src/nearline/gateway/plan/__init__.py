"""Plan-and-Execute: a strong model writes a short plan, cheap models carry out its steps.

Two faces:

* ``library`` — ``plan_and_execute`` / ``strong_only`` / ``compare``: one call each, for code
  and benchmarks that hold the providers themselves.
* ``provider`` — ``PlanProvider``: a plan as a model of the catalogue
  (``models: {research: {provider: "plan:deep"}}``), streamed through the gateway: the plan
  as a progressive preliminary, each step's result as it exists, the final answer last;
  any failure falls back to one strong model (docs/routing.md, "Plans").
"""

from __future__ import annotations

from nearline.gateway.plan.library import (
    PLAN_PROMPT,
    STEP_PROMPT,
    Call,
    Endpoint,
    PlanComparison,
    PlanRun,
    StepResult,
    StrongRun,
    compare,
    parse_plan,
    plan_and_execute,
    strong_only,
)

__all__ = [
    "PLAN_PROMPT",
    "STEP_PROMPT",
    "Call",
    "Endpoint",
    "PlanComparison",
    "PlanRun",
    "StepResult",
    "StrongRun",
    "compare",
    "parse_plan",
    "plan_and_execute",
    "strong_only",
]
