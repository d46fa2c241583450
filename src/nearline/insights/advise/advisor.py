"""The decision: for each path, real-time, near-real-time (which window) or batch.

Each option gets a latency mix, the perception band its p95 reaches, an infrastructure cost
(``cost.py``) and a delay cost (requests x typical delay x what a second of delay costs). The
recommendation is the option with the lowest total among those that meet the path's deadline.
Then: how reliable the path's pipeline is, and whether reaching the next faster band is worth it.

An interactive path (a user waits on screen: from a log, most requests streamed) is never
advised batch, nor a window that makes its band worse than real-time's, unless the cost of
delay was *given* (profile or ``--delay-cost-per-second``): a derived or absent delay cost is
not enough to send a waiting user to tomorrow's batch. Reliability multiplies the profile's
steps with the success rate the log measured, with its Wilson interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from nearline.core.bands import (
    BAND_LIMITS,
    PerceptionBand,
    band_of,
    next_faster,
    upper_limit_s,
)
from nearline.insights.advise.actions import Action
from nearline.insights.advise.cost import (
    OptionCost,
    batch_cost,
    near_real_time_cost,
    realtime_cost,
)
from nearline.insights.advise.evidence import DelayCostFrom, PathEvidence
from nearline.insights.advise.latency import (
    ZERO,
    Latency,
    LatencyShare,
    deciding_share,
    p95_s,
    typical_delay_s,
    uniform_wait,
)
from nearline.insights.advise.profile import DAYS_PER_MONTH, PathInput, Policy, Profile
from nearline.insights.advise.reliability import StepReliability, compound_reliability, weakest_step

MEASURED_STEP = "requests (measured)"
BATCH_RULED_OUT = (
    "interactive: a user waits for this answer; batch only with a delay cost you give "
    "(--delay-cost-per-second or the profile)"
)
if TYPE_CHECKING:
    from nearline.insights.advise.precompute import Precompute

SLOWER_RULED_OUT = "interactive: this window makes the band worse than real-time's"


class Mode(StrEnum):
    REALTIME = "real-time"
    NEAR_REAL_TIME = "near-real-time"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class Option:
    mode: Mode
    wait_s: float  # the window (near-real-time), the period (batch), 0 (real-time)
    cost: OptionCost
    mix: tuple[LatencyShare, ...]
    delay_cost_usd: float  # per month
    meets_deadline: bool
    ruled_out: str | None = None  # why it may not be recommended (besides the deadline)

    @property
    def eligible(self) -> bool:
        return self.meets_deadline and self.ruled_out is None

    @property
    def typical_delay_s(self) -> float:
        return typical_delay_s(self.mix)

    @property
    def p95_s(self) -> float:
        return p95_s(self.mix)

    @property
    def band(self) -> PerceptionBand:
        return band_of(self.p95_s)

    @property
    def total_usd(self) -> float:
        return self.cost.total_usd + self.delay_cost_usd


@dataclass(frozen=True, slots=True)
class Faster:
    """Whether moving the path's p95 into the next faster band pays for itself."""

    target: PerceptionBand | None  # None: already instant
    cut_s: float  # how much faster the deciding share must get
    value_usd: float  # delay cost saved per month
    cost_usd: float | None  # what it would cost per month, when the profile says

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "already instant"
        if self.value_usd <= 0:
            return "no: delay costs nothing here"
        if self.cost_usd is None:
            return f"worth up to ${self.value_usd:,.0f}/month"
        return "yes" if self.value_usd > self.cost_usd else "no: costs more than it saves"


@dataclass(frozen=True, slots=True)
class Reliability:
    """Compound success of the path: the profile's steps x the log's measured success."""

    value: float
    low: float
    high: float
    sample_size: int | None  # requests the log measured; None: modelled from the steps only


@dataclass(frozen=True, slots=True)
class PathAdvice:
    path: PathInput
    requests_per_month: float
    realtime: Option
    near_real_time: Option  # with the best window
    batch: Option
    recommended: Option
    reliability: Reliability
    weakest_step: StepReliability | None
    faster: Faster
    evidence: PathEvidence = field(default_factory=PathEvidence)
    actions: tuple[Action, ...] = ()  # the what-if's mitigations, best first

    @property
    def interactive(self) -> bool:
        return self.path.interactive is True

    @property
    def options(self) -> tuple[Option, Option, Option]:
        return (self.realtime, self.near_real_time, self.batch)


@dataclass(frozen=True, slots=True)
class Advice:
    profile: Profile
    paths: tuple[PathAdvice, ...]
    precompute: Precompute | None = None  # mined from the log's questions

    def worth_making_faster(self) -> tuple[PathAdvice, ...]:
        """Paths whose next faster band is worth something, the most valuable first."""
        ranked = [advice for advice in self.paths if advice.faster.value_usd > 0]
        return tuple(sorted(ranked, key=lambda advice: -advice.faster.value_usd))


def advise(profile: Profile, evidence: Mapping[str, PathEvidence] | None = None) -> Advice:
    found = evidence or {}
    return Advice(
        profile,
        tuple(advise_path(path, profile, found.get(path.name)) for path in profile.paths),
    )


def _evidence(path: PathInput, evidence: PathEvidence | None) -> PathEvidence:
    if evidence is not None:
        return evidence
    given = path.delay_cost_per_second_usd is not None
    return PathEvidence(delay_cost_from=DelayCostFrom.GIVEN if given else DelayCostFrom.NONE)


def advise_path(
    path: PathInput, profile: Profile, evidence: PathEvidence | None = None
) -> PathAdvice:
    policy = profile.policy
    evidence = _evidence(path, evidence)
    guarded = path.interactive is True and evidence.delay_cost_from is not DelayCostFrom.GIVEN
    requests = path.daily_requests * DAYS_PER_MONTH
    realtime = _option(
        path,
        requests,
        Mode.REALTIME,
        0.0,
        realtime_cost(path, profile.prices, policy.realtime_utilisation),
        _mix(path, policy, ZERO),
    )
    windows = [
        _option(
            path,
            requests,
            Mode.NEAR_REAL_TIME,
            window,
            near_real_time_cost(path, profile.prices, policy.near_real_time_utilisation, window),
            _mix(path, policy, uniform_wait(window)),
        )
        for window in sorted(policy.windows_s)
    ]
    batch = _option(
        path,
        requests,
        Mode.BATCH,
        path.batch_period_s,
        batch_cost(path, profile.prices),
        _batch_mix(path, policy),
    )
    if guarded:
        batch = replace(batch, ruled_out=BATCH_RULED_OUT)
        order = list(BAND_ORDER)
        windows = [
            w
            if order.index(w.band) <= order.index(realtime.band)
            else replace(w, ruled_out=SLOWER_RULED_OUT)
            for w in windows
        ]
    near_real_time = _cheapest(windows)
    recommended = _cheapest([realtime, near_real_time, batch])
    steps = _steps(path, evidence)
    return PathAdvice(
        path=path,
        requests_per_month=requests,
        realtime=realtime,
        near_real_time=near_real_time,
        batch=batch,
        recommended=recommended,
        reliability=_reliability(path, evidence),
        weakest_step=weakest_step(steps),
        faster=_faster(path, requests, recommended),
        evidence=evidence,
    )


BAND_ORDER = tuple(limit.band for limit in BAND_LIMITS)


def _steps(path: PathInput, evidence: PathEvidence) -> tuple[StepReliability, ...]:
    m = evidence.measurement
    success = None if m is None else m.success
    if success is None or success.sample_size == 0:
        return path.reliability_steps
    return (*path.reliability_steps, StepReliability(MEASURED_STEP, success.value))


def _reliability(path: PathInput, evidence: PathEvidence) -> Reliability:
    modelled = compound_reliability(path.reliability_steps)
    m = evidence.measurement
    success = None if m is None else m.success
    if success is None or success.sample_size == 0:
        return Reliability(modelled, modelled, modelled, None)
    return Reliability(
        modelled * success.value,
        modelled * success.low,
        modelled * success.high,
        success.sample_size,
    )


def _option(
    path: PathInput,
    requests: float,
    mode: Mode,
    wait_s: float,
    cost: OptionCost,
    mix: tuple[LatencyShare, ...],
) -> Option:
    delay = requests * sum(part.share * delay_cost_usd(path, part.latency.p50_s) for part in mix)
    meets = path.deadline_ms is None or p95_s(mix) <= path.deadline_ms / 1000.0
    return Option(mode, wait_s, cost, mix, delay, meets)


def delay_cost_usd(path: PathInput, seconds: float) -> float:
    """What one request's typical wait costs: linear up to the attention limit, then flat.

    Past that limit the user has turned away; waiting longer loses nothing more.
    """
    limit = upper_limit_s(PerceptionBand.ATTENTION)
    if seconds <= limit:
        return seconds * path.delay_cost_per_s
    if path.lost_request_cost_usd is not None:
        return path.lost_request_cost_usd
    return limit * path.delay_cost_per_s


def _cheapest(options: list[Option]) -> Option:
    """Lowest total among options that meet the deadline and are not ruled out; the fastest
    if none does.

    Ties go to the earlier option (real-time before near-real-time before batch; shorter
    windows first), i.e. to the faster one.
    """
    feasible = [option for option in options if option.eligible]
    if not feasible:
        allowed = [option for option in options if option.ruled_out is None] or options
        return min(allowed, key=lambda option: option.p95_s)
    return min(feasible, key=lambda option: option.total_usd)


def _store(policy: Policy, label: str, share: float) -> LatencyShare:
    store = Latency.from_ms(policy.store_latency_ms, policy.store_latency_ms)
    return LatencyShare(label, share, store)


def _mix(path: PathInput, policy: Policy, wait: Latency) -> tuple[LatencyShare, ...]:
    return (
        _store(policy, "cache hits", path.repeated_share),
        LatencyShare("computed", 1.0 - path.repeated_share, path.computed_latency + wait),
    )


def _batch_mix(path: PathInput, policy: Policy) -> tuple[LatencyShare, ...]:
    missed = 1.0 - path.repeated_share
    return (
        _store(policy, "cache hits", path.repeated_share),
        _store(policy, "precomputed", missed * path.precomputable_share),
        LatencyShare(
            "waits for the next run",
            missed * (1.0 - path.precomputable_share),
            path.computed_latency + uniform_wait(path.batch_period_s),
        ),
    )


def _faster(path: PathInput, requests: float, option: Option) -> Faster:
    target = next_faster(option.band)
    if target is None:
        return Faster(None, 0.0, 0.0, path.speedup_cost_per_month_usd)
    deciding = deciding_share(option.mix)
    cut = option.p95_s - upper_limit_s(target)
    faster_p50 = deciding.latency.shifted_down(cut).p50_s
    saved = delay_cost_usd(path, deciding.latency.p50_s) - delay_cost_usd(path, faster_p50)
    value = requests * deciding.share * saved
    return Faster(target, cut, value, path.speedup_cost_per_month_usd)
