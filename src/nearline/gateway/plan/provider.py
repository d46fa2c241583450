"""A plan as a model: ``PlanProvider`` streams Plan-and-Execute as one answer.

``models: {research: {provider: "plan:deep"}}`` with ``routing.plans.deep`` (config/routing.py)
makes ``research`` a model like any other: every transport asks for it and gets one answer.
What the client sees, in order:

1. ``Preliminary`` events (source ``plan:<name>``), each with the whole text so far: the
   planner's plan as its tokens arrive, then each step's result as it streams and ends —
   in order, or all at once with ``parallel`` (rendered in step order). The time to the
   first useful content is the planner's first token. A plain OpenAI client sees none of
   it (SSE comments); ``"nearline": {"progressive": false}`` turns it off.
2. ``Replace("replace")`` and the final answer as ``Delta`` events: the synthesiser's
   answer streamed, or (no ``synthesise``) the step results joined.
3. One ``Usage``: every call's tokens, the total cost (``cost_usd``, each call at its
   tier's price) and each call (``calls``: role, tier, step, latency, cost, outcome).

A planner answer with no numbered step, a failed or timed-out call, the plan's
``timeout_s`` or ``max_cost_usd`` passed — before the final answer's first token: every
call still running is stopped and the ``fallback`` tier answers alone (the calls already
made stay in the usage), or with ``on_failure: error`` the request fails. Closing the
stream (the client left) cancels every call in flight; each closes its upstream stream.

Once the exact tier exists (``attach_cache``), every call the plan makes — planner, steps,
synthesis, fallback — is looked up and stored there under its own key, as the request's
cache directive allows (``calls.StepCache``): a repeated step is replayed, not recomputed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nearline.config import ModelRoute
from nearline.config.routing import PlanSettings
from nearline.core.errors import NearlineError, UpstreamError
from nearline.core.events import (
    CallCost,
    Delta,
    Done,
    ErrorEvent,
    Event,
    FinishReason,
    Preliminary,
    Replace,
    Usage,
)
from nearline.core.provider import Capabilities, Provider, ProviderCall
from nearline.gateway.cache import policy
from nearline.gateway.plan.calls import (
    Part,
    Piece,
    Run,
    StepCache,
    close,
    cost_of,
    opened,
    produce,
    sub_call,
)
from nearline.gateway.plan.library import PLAN_PROMPT, STEP_PROMPT
from nearline.gateway.plan.text import numbered, parse_steps, rendered, task_of
from nearline.gateway.routing.telemetry import RoutingTelemetry

if TYPE_CHECKING:
    from nearline.gateway.serving.tiers import CacheTiers

log = logging.getLogger(__name__)

SYNTHESIS_PROMPT = (
    "Task: {task}\n\nA plan was made and each step carried out:\n\n{results}\n"
    "Write the final answer to the task from these results. Answer the task only."
)


class PlanFailed(UpstreamError):
    """The plan could not give an answer and ``on_failure`` is ``error``."""

    public_message = "the plan could not be carried out"
    code = "plan_failed"


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _State:
    """One plan being carried out: its request, its calls, what it has shown so far."""

    call: ProviderCall
    run: Run
    shown: list[bool]  # [a preliminary was shown]: shared with the fallback
    source: str
    cache: StepCache | None = None
    steps: list[str] = field(default_factory=list)
    results: dict[int, str] = field(default_factory=dict)
    streaming: dict[int, str] = field(default_factory=dict)  # steps under way: text so far

    @property
    def progressive(self) -> bool:
        return self.call.request.nearline.progressive is not False

    @property
    def task(self) -> str:
        return task_of(self.call.request)

    @property
    def answer(self) -> str:
        """The step results joined: the answer when there is no synthesiser."""
        return "\n\n".join(
            f"{n}. {self.steps[n - 1]}\n{self.results[n]}" for n in sorted(self.results)
        )

    def preliminary(self, text: str) -> Preliminary:
        self.shown[0] = True
        return Preliminary(text, source=self.source)


class PlanProvider:
    """Implements the ``Provider`` protocol over a planner, an executor, an optional
    synthesiser and a fallback (tiers, owned by the registry)."""

    def __init__(
        self,
        name: str,
        settings: PlanSettings,
        *,
        planner: Part,
        executor: Part,
        fallback: Part,
        synthesiser: Part | None,
        telemetry: RoutingTelemetry,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities()
        self.settings = settings
        self._planner = planner
        self._executor = executor
        self._fallback = fallback
        self._synthesiser = synthesiser
        self._telemetry = telemetry
        self._tiers: CacheTiers | None = None
        self._models: Mapping[str, ModelRoute] = {}

    def attach_cache(self, tiers: CacheTiers, models: Mapping[str, ModelRoute]) -> None:
        """Cache every call of the plan in ``tiers``' exact tier, as the request and the
        catalogue ``models``' policies allow (bound after the tiers exist: they are built
        over the catalogue, which holds this provider)."""
        self._tiers = tiers
        self._models = models

    def _step_cache(self, call: ProviderCall) -> StepCache | None:
        """The request's cache directive for the plan's own calls: the body extension and
        ``Cache-Control`` (the pipeline folds the header into it), then the model's policy."""
        if self._tiers is None or self._tiers.exact is None:
            return None
        directive = policy.from_request(call.request)
        route = self._models.get(call.request.model)
        if route is not None:
            directive = directive.also(policy.from_model(route, call.request))
        if not directive.lookup and not directive.store:
            return None
        return StepCache(self._tiers, lookup=directive.lookup, store=directive.store)

    @property
    def plan(self) -> str:
        return self.name.split(":", 1)[-1]

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self) -> bool:
        return self._planner.provider.is_ready() and self._executor.provider.is_ready()

    async def stream(self, call: ProviderCall) -> AsyncIterator[Event]:
        run = Run(self.settings.timeout_s)
        shown = [False]  # a preliminary was shown: the answer says it replaces it
        reason: str | None = None
        cache = self._step_cache(call)
        try:
            async with contextlib.aclosing(self._planned(call, run, shown, cache)) as events:
                async for event in events:
                    yield event
            return
        except _Failed as failure:
            reason = failure.reason
        finally:
            # the plan failed or the client left: stop every call still running
            for cost in run.cancel():
                self._record(run, cost)
            await run.wait()
        if self.settings.on_failure == "error":
            self._telemetry.plan_answer(self.plan, "failed", reason)
            raise PlanFailed(f"the plan {self.plan!r} failed: {reason}")
        log.info("plan %s: %s; the fallback tier answers alone", self.name, reason)
        self._telemetry.plan_answer(self.plan, "fallback", reason)
        fallen_back = self._fallen_back(call, run, shown[0], reason, cache)
        async with contextlib.aclosing(fallen_back) as events:
            async for event in events:
                yield event

    # --- the plan ------------------------------------------------------------------------

    async def _planned(
        self, call: ProviderCall, run: Run, shown: list[bool], cache: StepCache | None
    ) -> AsyncGenerator[Event, None]:
        state = _State(call, run, shown, source=f"plan:{self.plan}", cache=cache)
        for stage in (self._planning(state), self._executing(state)):
            async with contextlib.aclosing(stage) as events:
                async for event in events:
                    yield event
        answer = state.answer
        if self._synthesiser is None:
            if shown[0]:
                yield Replace("replace")
            yield Delta(answer)
            yield run.usage()
            self._telemetry.plan_answer(self.plan, "planned", "")
            yield Done("stop")  # the consumer may stop here: nothing runs after it
            return
        async with contextlib.aclosing(
            self._synthesised(call, run, shown[0], state.task, answer, cache)
        ) as events:
            async for event in events:
                yield event

    async def _planning(self, state: _State) -> AsyncGenerator[Event, None]:
        """The planner's answer, shown as it streams; it must hold a numbered step."""
        settings, run = self.settings, state.run
        prompt = PLAN_PROMPT.format(max_steps=settings.max_steps, task=state.task)
        planning = sub_call(state.call, self._planner, prompt, settings.plan_max_tokens)
        work = self._produce(
            run,
            0,
            self._planner,
            planning,
            "plan",
            state.cache,
            keep=lambda text: bool(parse_steps(text, settings.max_steps)),  # a usable plan
        )
        run.start(work, "plan", self._planner)
        plan_text = ""
        while True:
            piece = await self._next(run)
            if piece.kind == "failed":
                raise _Failed(f"planner {piece.text}")
            if piece.kind == "done":
                break
            plan_text += piece.text
            if state.progressive:
                yield state.preliminary(rendered(plan_text))
        self._within_budget(run)
        state.steps = parse_steps(plan_text, settings.max_steps)
        if not state.steps:
            raise _Failed("unusable plan")

    async def _executing(self, state: _State) -> AsyncGenerator[Event, None]:
        """Each step on the executor (in order, or all at once), shown as it streams."""
        settings, run, steps = self.settings, state.run, state.steps
        plan_block = numbered(steps)

        def launch(number: int) -> None:
            so_far = "".join(
                f"Result of step {n}: {state.results[n]}\n\n" for n in sorted(state.results)
            )
            prompt = STEP_PROMPT.format(
                task=state.task,
                plan=plan_block,
                results=so_far,
                number=number,
                step=steps[number - 1],
            )
            step_call = sub_call(state.call, self._executor, prompt, settings.step_max_tokens)
            work = self._produce(run, number, self._executor, step_call, "step", state.cache)
            run.start(work, "step", self._executor, step=number)

        for number in range(1, len(steps) + 1 if settings.parallel else 2):
            launch(number)
        if state.progressive:
            yield state.preliminary(rendered(plan_block, steps))
        while len(state.results) < len(steps):
            piece = await self._next(run)
            if piece.kind == "failed":
                raise _Failed(f"step {piece.who} {piece.text}")
            if piece.kind == "delta":
                state.streaming[piece.who] = state.streaming.get(piece.who, "") + piece.text
            else:
                state.streaming.pop(piece.who, None)
                state.results[piece.who] = piece.text
                self._within_budget(run)
                if not settings.parallel and piece.who < len(steps):
                    launch(piece.who + 1)
            if state.progressive:
                yield state.preliminary(rendered(plan_block, steps, state.results, state.streaming))

    async def _produce(
        self,
        run: Run,
        who: int,
        part: Part,
        call: ProviderCall,
        role: str,
        cache: StepCache | None,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        await produce(
            run,
            who,
            part,
            call,
            role=role,
            timeout_s=self.settings.step_timeout_s,
            cache=cache,
            keep=keep,
        )

    async def _next(self, run: Run) -> Piece:
        piece = await run.next()
        if piece is None:
            raise _Failed("timeout")
        if piece.cost is not None:
            self._record(run, piece.cost)
        return piece

    def _record(self, run: Run, cost: CallCost) -> None:
        run.calls.append(cost)
        self._telemetry.plan_call(self.plan, cost.role, cost.outcome, cost.latency_s, cost.cost_usd)

    def _within_budget(self, run: Run) -> None:
        budget = self.settings.max_cost_usd
        if budget is not None and run.spent_usd > budget:
            raise _Failed("budget")

    async def _synthesised(
        self,
        call: ProviderCall,
        run: Run,
        shown: bool,
        task: str,
        results: str,
        cache: StepCache | None,
    ) -> AsyncGenerator[Event, None]:
        assert self._synthesiser is not None
        prompt = SYNTHESIS_PROMPT.format(task=task, results=results)
        synthesis = sub_call(call, self._synthesiser, prompt, call.request.max_tokens)
        final = self._final(synthesis, self._synthesiser, "synthesis", run, shown, cache)
        async with contextlib.aclosing(final) as events:
            async for event in events:
                yield event

    async def _fallen_back(
        self, call: ProviderCall, run: Run, shown: bool, reason: str, cache: StepCache | None
    ) -> AsyncGenerator[Event, None]:
        fallback_call = ProviderCall(
            call.request,
            call.upstream_model,
            call.tenant,
            deadline=call.deadline,
            provider=self._fallback.name,
        )
        final = self._final(fallback_call, self._fallback, "fallback", run, shown, cache)
        try:
            async with contextlib.aclosing(final) as events:
                async for event in events:
                    yield event
        except _Failed as failure:
            raise PlanFailed(
                f"the plan {self.plan!r} failed ({reason}) and so did its fallback "
                f"({failure.reason})"
            ) from None

    async def _final(
        self,
        call: ProviderCall,
        part: Part,
        role: str,
        run: Run,
        shown: bool,
        cache: StepCache | None,
    ) -> AsyncGenerator[Event, None]:
        """``part``'s answer (or its replay from ``cache``) as the final answer; a failure
        before its first token raises ``_Failed`` (nothing of the answer was shown), after
        it is the answer's error."""
        started = time.perf_counter()
        events, cached = await opened(cache, part, call)
        usage: Usage | None = None
        reason: FinishReason = "stop"
        began = False
        outcome = "error"
        try:
            async for event in events:
                match event:
                    case Delta():
                        if not began and shown:
                            yield Replace("replace")
                        began = True
                        yield event
                    case Usage():
                        usage = event
                    case Done(finish_reason=finish):
                        reason = finish
                        outcome = "cached" if cached else "ok"
                        break
                    case ErrorEvent(error=error):
                        raise error
                    case _:
                        pass
        except NearlineError as error:
            if began:
                raise
            raise _Failed(f"{role} {error.code or 'error'}") from error
        finally:
            await close(events)
            self._record(run, cost_of(role, part, started, usage, outcome=outcome))
        if outcome == "error":
            if began:
                raise UpstreamError(f"the {role} answer ended without finishing")
            raise _Failed(f"{role} ended without finishing")
        yield run.usage(None if cached else usage)
        if role == "synthesis":
            self._telemetry.plan_answer(self.plan, "planned", "")
        yield Done(reason)


def attach_caches(
    providers: Iterable[Provider], tiers: CacheTiers, models: Mapping[str, ModelRoute]
) -> None:
    """Give every plan among ``providers`` the exact tier for its calls."""
    for provider in providers:
        if isinstance(provider, PlanProvider):
            provider.attach_cache(tiers, models)
