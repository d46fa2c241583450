"""What-if: the logged traffic of a path replayed offline under each mitigation.

Requests are replayed in arrival order; each keeps its measured time to first useful content
(TTFU) and cost unless the mitigation changes them:

* **exact cache**: a request whose tenant, model and messages equal an earlier request's that
  completed (not failed, not abandoned) within ``policy.cache_ttl_s`` before it arrived is a
  hit. The log keeps messages, not sampling fields: identical messages count as identical
  answer-changing requests.
* **semantic cache**: the exact hits, plus a request whose question's cluster (``precompute``,
  at the semantic cache's threshold) was answered for the same tenant within the TTL.
* **progressive drafts**: every computed request shows a local draft first; its TTFU is drawn
  from a log-normal through ``policy.draft_first_useful_ms`` (the measured local-model p50 and
  p95) at evenly spread quantiles. The refined answer is still paid: spend is unchanged.
* **cheaper tier**: computed requests at the profile's ``cheaper_tier`` price and latency, or
  at a cheaper model's measured cost and TTFU on the same route in the log (quantile mapped).
  Answer quality is not measured here.
* **plan-and-execute**: computed requests answered by a plan model on the same route (one
  whose log rows carry a planner's call, or a model the config names ``plan:<name>``), with
  at least 20 computed requests. Each computed request costs its own cost times the measured
  ratio (the plan's mean computed cost / this path's), and its TTFU is the plan's measured
  TTFU at the request's quantile — the planner's first token, which streams as the plan's
  first preliminary. Only a plan cheaper than the path is a candidate; quality not measured.
* **prefetch**: transitions between question clusters are learned online, per tenant session
  (the prefetcher's ``session_gap_s``, ``min_transitions``, ``min_probability``); after a
  question, each predicted follow-up is computed ahead. A request that was predicted is a hit;
  every prefetch that was not asked is spend wasted at the path's mean computed cost.

A hit answers in the measured store latency (``policy.store_latency_ms`` without cache rows),
never slower than the request's own measured TTFU, so a cache never projects a worse TTFU
than none. Money per month scales the replayed traffic to the path's monthly requests (see the
extrapolation warning). Actions are ranked by the spend and delay cost they save per month,
then by how much they cut the p95.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from nearline.config import PrefetchSettings
from nearline.core.bands import BAND_LIMITS, band_of
from nearline.insights.advise.actions import Action, Projection
from nearline.insights.advise.advisor import PathAdvice, delay_cost_usd
from nearline.insights.advise.precompute import Clustering
from nearline.insights.advise.profile import Policy
from nearline.insights.advise.requestlog import RequestLogRecord, RouteMeasurement
from nearline.insights.advise.stats import percentile, wilson

GOLDEN = 0.6180339887498949
MIN_TIER_ROWS = 20


@dataclass(frozen=True, slots=True)
class Replay:
    ms: list[float]
    cost: list[float]


def replay_path(
    advice: PathAdvice,
    policy: Policy,
    *,
    clustering: Clustering | None,
    measurements: Mapping[str, RouteMeasurement],
    prefetch: PrefetchSettings,
    plan_models: Collection[str] = (),
) -> tuple[Action, ...]:
    """Each mitigation's projection on the path's rows, best first. ``plan_models``: the
    catalogue models that are plans (``provider: plan:<name>``), for logs without ``calls``."""
    m = advice.evidence.measurement
    if m is None or not m.records:
        return ()
    rows = m.records
    factor = advice.requests_per_month / len(rows)
    store_ms = m.store_latency.p50_s * 1000.0 if m.store_latency else policy.store_latency_ms
    base = Replay([r.time_to_first_useful_ms for r in rows], [r.cost_usd for r in rows])

    def project(replay: Replay, extra_usd: float = 0.0) -> Projection:
        bands = Counter(band_of(ms / 1000.0) for ms in replay.ms)
        delay = sum(delay_cost_usd(advice.path, ms / 1000.0) for ms in replay.ms)
        return Projection(
            p50_ms=percentile(replay.ms, 0.5),
            p95_ms=percentile(replay.ms, 0.95),
            by_band=tuple((b.band, bands[b.band] / len(rows)) for b in BAND_LIMITS),
            spend_usd=(sum(replay.cost) + extra_usd) * factor,
            delay_cost_usd=delay * factor,
        )

    baseline = project(base)

    def action(
        name: str, hits: Sequence[bool], replay: Replay, note: str, extra: float = 0.0
    ) -> Action:
        return Action(name, wilson(sum(hits), len(rows)), project(replay, extra), baseline, note)

    actions = []
    if any(r.input for r in rows):  # without stored messages no request can be matched
        exact = _cache_hits(rows, _exact_key(rows), policy.cache_ttl_s)
        actions.append(
            action(
                "exact cache",
                exact,
                _hit(base, exact, store_ms),
                "identical messages from the same tenant within the cache TTL",
            )
        )
    else:
        exact = [False] * len(rows)
    if clustering is not None:
        labels = clustering.labels
        semantic = _cache_hits(
            rows,
            lambda i: (rows[i].tenant, labels[i]) if i in labels else None,
            policy.cache_ttl_s,
        )
        both = [a or b for a, b in zip(exact, semantic, strict=True)]
        actions.append(
            action(
                "semantic cache",
                both,
                _hit(base, both, store_ms),
                "exact hits plus paraphrases at or above the similarity threshold",
            )
        )
        hits, wasted = _prefetch_hits(rows, labels, prefetch)
        mean_cost = m.mean_cost_of_computed_usd
        actions.append(
            action(
                "prefetch follow-ups",
                hits,
                _hit(base, hits, store_ms, keep_cost=True),
                f"{wasted} prefetches not asked, at ${mean_cost:.4g} each",
                wasted * mean_cost,
            )
        )
    drafts = _draft_ms(rows, policy)
    drafted = Replay([min(a, b) for a, b in zip(base.ms, drafts, strict=True)], base.cost)
    actions.append(
        action(
            "progressive drafts",
            [d < b for d, b in zip(drafts, base.ms, strict=True)],
            drafted,
            f"a local draft first (p50 {policy.draft_first_useful_ms.p50_ms:g} ms, p95 "
            f"{policy.draft_first_useful_ms.p95_ms:g} ms); the refined answer still paid",
        )
    )
    tier = _cheaper_tier(advice, m, measurements, plan_models)
    if tier is not None:
        name, ttfu_at, cost = tier
        computed = [not r.served_from_store for r in rows]
        order = _quantiles([base.ms[i] for i in range(len(rows)) if computed[i]])
        quantile = iter(order)
        tiered = Replay(
            [ttfu_at(next(quantile)) if c else ms for c, ms in zip(computed, base.ms, strict=True)],
            [cost if c else spent for c, spent in zip(computed, base.cost, strict=True)],
        )
        actions.append(
            action(f"cheaper tier ({name})", computed, tiered, "answer quality not measured")
        )
    plan = _plan(m, measurements, plan_models)
    if plan is not None:
        name, ttfu_at, ratio, note = plan
        computed = [not r.served_from_store for r in rows]
        quantile = iter(_quantiles([base.ms[i] for i in range(len(rows)) if computed[i]]))
        planned = Replay(
            [ttfu_at(next(quantile)) if c else ms for c, ms in zip(computed, base.ms, strict=True)],
            [spent * ratio if c else spent for c, spent in zip(computed, base.cost, strict=True)],
        )
        actions.append(action(f"plan-and-execute ({name})", computed, planned, note))
    return tuple(sorted(actions, key=lambda a: (-round(a.value_usd, 6), -a.p95_cut_ms)))


def _exact_key(rows: Sequence[RequestLogRecord]) -> Callable[[int], object | None]:
    def key(index: int) -> object | None:
        row = rows[index]
        return (row.tenant, row.model, row.input) if row.input else None

    return key


def _cache_hits(
    rows: Sequence[RequestLogRecord],
    key_of: Callable[[int], object | None],
    ttl_s: float,
) -> list[bool]:
    """Whether each request finds an answer stored by an earlier completed one."""
    stored: dict[object, list[float]] = defaultdict(list)  # key -> completion times
    hits = []
    for index, row in enumerate(rows):
        key = key_of(index)
        at = row.started_at.timestamp()
        hit = False
        if key is not None and not row.served_from_store:
            hit = any(done <= at <= done + ttl_s for done in stored.get(key, ()))
        hits.append(hit)
        if key is not None and not row.error and not row.abandoned:
            stored[key].append(at + row.total_ms / 1000.0)
    return hits


def _hit(base: Replay, hits: Sequence[bool], store_ms: float, keep_cost: bool = False) -> Replay:
    return Replay(
        [min(store_ms, ms) if hit else ms for hit, ms in zip(hits, base.ms, strict=True)],
        [c if keep_cost or not hit else 0.0 for hit, c in zip(hits, base.cost, strict=True)],
    )


def _prefetch_hits(
    rows: Sequence[RequestLogRecord], labels: Mapping[int, int], settings: PrefetchSettings
) -> tuple[list[bool], int]:
    transitions: dict[int, Counter[int]] = defaultdict(Counter)
    last: dict[str, tuple[int, float, frozenset[int]]] = {}
    hits, wasted = [], 0
    for index, row in enumerate(rows):
        label = labels.get(index)
        at = row.started_at.timestamp()
        before = last.get(row.tenant)
        in_session = before is not None and at - before[1] <= settings.session_gap_s
        hit = label is not None and in_session and before is not None and label in before[2]
        hits.append(hit and not row.served_from_store)
        if before is not None:
            wasted += len(before[2]) - (1 if hit else 0)
        if label is None:
            continue
        if in_session and before is not None and before[0] != label:
            transitions[before[0]][label] += 1
        nexts = transitions[label]
        total = sum(nexts.values())
        predicted = frozenset(
            then
            for then, times in nexts.items()
            if times >= settings.min_transitions and times / total >= settings.min_probability
        )
        last[row.tenant] = (label, at, predicted)
    return hits, wasted


def _draft_ms(rows: Sequence[RequestLogRecord], policy: Policy) -> list[float]:
    """A draft TTFU per computed request (log-normal through p50/p95); inf for cache hits."""
    p50, p95 = policy.draft_first_useful_ms.p50_ms, policy.draft_first_useful_ms.p95_ms
    sigma = math.log(max(p95, 1e-9) / max(p50, 1e-9)) / NormalDist().inv_cdf(0.95)
    drafts = []
    for index, row in enumerate(rows):
        if row.served_from_store:
            drafts.append(math.inf)
            continue
        q = ((index + 1) * GOLDEN) % 1.0
        drafts.append(p50 * math.exp(sigma * NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6))))
    return drafts


def _quantiles(values: Sequence[float]) -> list[float]:
    """Each value's mid-rank quantile in its own sample, in the original order."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = (np.arange(len(values)) + 0.5) / max(len(values), 1)
    return [float(r) for r in ranks]


def _cheaper_tier(
    advice: PathAdvice,
    m: RouteMeasurement,
    measurements: Mapping[str, RouteMeasurement],
    plan_models: Collection[str],
) -> tuple[str, Callable[[float], float], float] | None:
    """The cheaper model: the profile's ``cheaper_tier``, else the log's cheapest other model
    on the same route (by mean computed cost, with at least 20 computed requests) that is
    not a plan (a plan is its own action)."""
    given = advice.path.cheaper_tier
    if given is not None:
        p50, p95 = given.time_to_first_useful_ms.p50_ms, given.time_to_first_useful_ms.p95_ms
        sigma = math.log(max(p95, 1e-9) / max(p50, 1e-9)) / NormalDist().inv_cdf(0.95)
        return (
            given.name,
            lambda q: p50 * math.exp(sigma * NormalDist().inv_cdf(q)),
            given.cost_per_request_usd,
        )
    others = [
        other
        for other in _computed_siblings(m, measurements)
        if not _is_plan(other, plan_models)
        and other.mean_cost_of_computed_usd < m.mean_cost_of_computed_usd
    ]
    if not others:
        return None
    cheapest = min(others, key=lambda other: other.mean_cost_of_computed_usd)
    sample = np.asarray(
        [r.time_to_first_useful_ms for r in cheapest.records if not r.served_from_store]
    )
    return (
        cheapest.route,
        lambda q: float(np.quantile(sample, q)),
        cheapest.mean_cost_of_computed_usd,
    )


def _computed_siblings(
    m: RouteMeasurement, measurements: Mapping[str, RouteMeasurement]
) -> list[RouteMeasurement]:
    """The other models measured on ``m``'s route with at least ``MIN_TIER_ROWS`` computed
    (not cache-served) requests."""
    route = m.route.split(" ")[0]
    return [
        other
        for other in measurements.values()
        if other.route != m.route
        and other.route.split(" ")[0] == route
        and sum(not r.served_from_store for r in other.records) >= MIN_TIER_ROWS
    ]


def _plan(
    m: RouteMeasurement, measurements: Mapping[str, RouteMeasurement], plan_models: Collection[str]
) -> tuple[str, Callable[[float], float], float, str] | None:
    """The plan model on ``m``'s route with the most computed requests (at least 20), when
    it is cheaper per computed request than ``m``: its name, its TTFU at a quantile, the
    cost ratio plan / ``m`` and a note saying what was measured."""

    if _is_plan(m, plan_models) or m.mean_cost_of_computed_usd <= 0:
        return None
    plans = [other for other in _computed_siblings(m, measurements) if _is_plan(other, plan_models)]
    if not plans:
        return None
    plan = max(plans, key=lambda other: sum(not r.served_from_store for r in other.records))
    ratio = plan.mean_cost_of_computed_usd / m.mean_cost_of_computed_usd
    if ratio >= 1.0:
        return None
    computed = [r for r in plan.records if not r.served_from_store]
    sample = np.asarray([r.time_to_first_useful_ms for r in computed])
    fell_back = sum(any(c.role == "fallback" for c in r.calls) for r in computed)
    note = (
        f"measured on {len(computed)} plan answers: cost x {ratio:.2f} of this path's, first "
        f"useful content at the planner's first token, {fell_back} fell back to one model; "
        "answer quality not measured"
    )
    return plan.route, lambda q: float(np.quantile(sample, q)), ratio, note


def _is_plan(m: RouteMeasurement, plan_models: Collection[str]) -> bool:
    """A plan model's path: named a plan by the config, or its rows carry a planner's call."""
    model = m.records[0].model if m.records else ""
    return model in plan_models or any(r.planned for r in m.records)
