"""Plan-and-Execute: a strong model writes a short plan, cheap models carry out its steps.

``plan_and_execute`` asks the planner for at most ``max_steps`` numbered steps, then has the
executor do each step — in order, each seeing the results so far, or all at once with
``parallel=True`` when the steps do not depend on each other. ``strong_only`` answers the
same task with the strong model alone, and ``compare`` runs both and reports cost and
latency side by side (``PlanComparison.table``).

Costs come from each endpoint's price and the ``Usage`` its answers report.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from nearline.core.events import CollectedAnswer
from nearline.core.price import FREE, Price
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import ChatRequest, Message
from nearline.gateway.routing.collect import ask

_NUMBERED = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):-]\s*(.+?)\s*$", re.IGNORECASE)

PLAN_PROMPT = (
    "Write a short plan for the task below: at most {max_steps} numbered steps, one per "
    "line, each a concrete instruction someone else can carry out. No other text.\n\n"
    "Task: {task}"
)
STEP_PROMPT = (
    "You carry out one step of a plan.\n\nTask: {task}\n\nPlan:\n{plan}\n\n"
    "{results}Now do step {number}: {step}\nAnswer with the result of this step only."
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A model to call: the provider, its model name, its price."""

    provider: Provider
    upstream_model: str
    price: Price = FREE

    async def run(self, prompt: str, tenant: str, max_tokens: int | None) -> Call:
        request = ChatRequest(
            model=self.upstream_model,
            messages=[Message(role="user", content=prompt)],
            max_tokens=max_tokens,
        )
        started = time.perf_counter()
        answer = await ask(self.provider, ProviderCall(request, self.upstream_model, tenant))
        return Call(answer, time.perf_counter() - started, self.cost(answer))

    def cost(self, answer: CollectedAnswer) -> float:
        return 0.0 if answer.usage is None else self.price.cost(answer.usage)


@dataclass(frozen=True, slots=True)
class Call:
    answer: CollectedAnswer
    latency_s: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int
    step: str
    text: str
    latency_s: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class PlanRun:
    plan: list[str]
    steps: list[StepResult]
    planning_latency_s: float
    planning_cost_usd: float
    latency_s: float

    @property
    def cost_usd(self) -> float:
        return self.planning_cost_usd + sum(step.cost_usd for step in self.steps)

    @property
    def answer(self) -> str:
        return "\n\n".join(f"{s.number}. {s.step}\n{s.text}" for s in self.steps)


@dataclass(frozen=True, slots=True)
class StrongRun:
    answer: str
    latency_s: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class PlanComparison:
    plan_and_execute: PlanRun
    strong_only: StrongRun

    def table(self) -> str:
        plan, strong = self.plan_and_execute, self.strong_only
        rows = [
            ("run", "calls", "latency s", "cost USD"),
            ("strong only", "1", f"{strong.latency_s:.3f}", f"{strong.cost_usd:.6f}"),
            (
                "plan + execute",
                str(1 + len(plan.steps)),
                f"{plan.latency_s:.3f}",
                f"{plan.cost_usd:.6f}",
            ),
        ]
        return "\n".join(f"{a:<16}{b:>6}{c:>12}{d:>14}" for a, b, c, d in rows)


def parse_plan(text: str, max_steps: int) -> list[str]:
    """Numbered lines ("1. ...", "2) ...", "Step 3: ..."); else the non-empty lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = [m.group(1) for line in lines if (m := _NUMBERED.match(line))]
    steps = numbered or lines
    return steps[:max_steps]


async def plan_and_execute(
    task: str,
    planner: Endpoint,
    executor: Endpoint,
    *,
    max_steps: int = 5,
    parallel: bool = False,
    tenant: str = "plan",
    plan_max_tokens: int | None = 200,
    step_max_tokens: int | None = 256,
) -> PlanRun:
    started = time.perf_counter()
    planning = await planner.run(
        PLAN_PROMPT.format(max_steps=max_steps, task=task), tenant, max_tokens=plan_max_tokens
    )
    plan = parse_plan(planning.answer.text, max_steps) or [task]
    plan_text = "\n".join(f"{n}. {step}" for n, step in enumerate(plan, 1))

    async def run_step(number: int, step: str, results: str) -> StepResult:
        prompt = STEP_PROMPT.format(
            task=task, plan=plan_text, results=results, number=number, step=step
        )
        done = await executor.run(prompt, tenant, step_max_tokens)
        return StepResult(number, step, done.answer.text, done.latency_s, done.cost_usd)

    if parallel:
        steps = list(
            await asyncio.gather(*(run_step(n, step, "") for n, step in enumerate(plan, 1)))
        )
    else:
        steps = []
        for number, step in enumerate(plan, 1):
            results = "".join(f"Result of step {s.number}: {s.text}\n\n" for s in steps)
            steps.append(await run_step(number, step, results))
    return PlanRun(
        plan=plan,
        steps=steps,
        planning_latency_s=planning.latency_s,
        planning_cost_usd=planning.cost_usd,
        latency_s=time.perf_counter() - started,
    )


async def strong_only(
    task: str, strong: Endpoint, *, tenant: str = "plan", max_tokens: int | None = None
) -> StrongRun:
    done = await strong.run(task, tenant, max_tokens)
    return StrongRun(done.answer.text, done.latency_s, done.cost_usd)


async def compare(
    task: str,
    planner: Endpoint,
    executor: Endpoint,
    *,
    max_steps: int = 5,
    parallel: bool = False,
    max_tokens: int | None = None,
    plan_max_tokens: int | None = 200,
    step_max_tokens: int | None = 256,
) -> PlanComparison:
    """Both runs, one after the other (so they do not compete for the same upstreams)."""
    baseline = await strong_only(task, planner, max_tokens=max_tokens)
    planned = await plan_and_execute(
        task,
        planner,
        executor,
        max_steps=max_steps,
        parallel=parallel,
        plan_max_tokens=plan_max_tokens,
        step_max_tokens=step_max_tokens,
    )
    return PlanComparison(planned, baseline)
