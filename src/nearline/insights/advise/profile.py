"""A use-case profile: what delay costs, how much traffic, what can be precomputed, each path.

Read from YAML or JSON. Unknown keys are errors, so a typo never silently becomes a default.
Values under ``defaults:`` apply to every path that does not set them itself. Prices and the
capacity policy are explicit inputs with documented defaults; override them in the file or with
``nearline advise --price NAME=VALUE``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from nearline.core.model import FrozenStrict as _Strict
from nearline.insights.advise.latency import Latency
from nearline.insights.advise.reliability import StepReliability

SECONDS_PER_DAY = 86_400.0
DAYS_PER_MONTH = 30.0
HOURS_PER_MONTH = 24.0 * DAYS_PER_MONTH


class ProfileError(Exception):
    """The profile cannot be used; the message names the file and the offending key."""


class LatencyInput(_Strict):
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.p50_ms > self.p95_ms:
            raise ValueError("p50_ms must not exceed p95_ms")
        return self

    def to_latency(self) -> Latency:
        return Latency.from_ms(self.p50_ms, self.p95_ms)


class StepInput(_Strict):
    """One step of a path's pipeline (retrieval, a model call, a tool call, ...)."""

    name: str = Field(min_length=1)
    latency: LatencyInput | None = None
    reliability: float = Field(default=1.0, ge=0, le=1)
    repeat: int = Field(default=1, ge=1, description="how many times the step runs per request")
    retries: int = Field(default=0, ge=0)

    def to_reliability(self) -> StepReliability:
        return StepReliability(self.name, self.reliability, self.repeat, self.retries)


class CapacityInput(_Strict):
    """Self-hosted serving capacity for a path: what one instance sustains."""

    rps_per_instance: float = Field(gt=0, description="requests/s one instance sustains alone")
    batched_rps_per_instance: float | None = Field(
        default=None, gt=0, description="requests/s at a full batch (default: no batching gain)"
    )
    max_batch: int = Field(default=32, ge=1, description="requests in a full batch")

    @property
    def batched_rps(self) -> float:
        return self.batched_rps_per_instance or self.rps_per_instance


class CheaperTierInput(_Strict):
    """A cheaper model the path could be routed to (the what-if's "cheaper tier")."""

    name: str = Field(min_length=1)
    cost_per_request_usd: float = Field(ge=0)
    time_to_first_useful_ms: LatencyInput


class PathInput(_Strict):
    """One path through the product (an endpoint, an event handler, a report).

    ``requests_per_day`` and the latency may be left out when a request log measures them
    (``nearline advise --log ... PROFILE``): the profile then overlays the log field by field.
    """

    name: str = Field(min_length=1)
    requests_per_day: float | None = Field(default=None, ge=0)
    delay_cost_per_second_usd: float | None = Field(
        default=None,
        ge=0,
        description="what one second of delay on one request costs; absent: derived from the "
        "log's abandonment when it can be, else 0 (and then an interactive path is never batch)",
    )
    interactive: bool | None = Field(
        default=None,
        description="a user waits on screen for this answer (from a log: most requests streamed)",
    )
    cheaper_tier: CheaperTierInput | None = None
    peak_to_average: float = Field(default=1.0, ge=1)
    burst_duration_s: float = Field(default=3600.0, gt=0, description="how long a peak lasts")
    repeated_share: float = Field(default=0.0, ge=0, le=1, description="answered from a cache")
    precomputable_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="of the rest, whose answer can be computed ahead and stays valid a period",
    )
    time_to_first_useful_ms: LatencyInput | None = Field(
        default=None, description="measured; when absent, the steps' latencies add up"
    )
    steps: tuple[StepInput, ...] = ()
    capacity: CapacityInput | None = Field(
        default=None, description="self-hosted capacity; absent: paid per request only"
    )
    api_cost_per_request_usd: float = Field(default=0.0, ge=0)
    deadline_ms: float | None = Field(
        default=None, gt=0, description="hard limit on p95; options above it are ruled out"
    )
    batch_period_s: float = Field(default=SECONDS_PER_DAY, gt=0)
    speedup_cost_per_month_usd: float | None = Field(
        default=None, ge=0, description="what reaching the next faster band would cost"
    )
    lost_request_cost_usd: float | None = Field(
        default=None,
        ge=0,
        description="cost of a request whose wait passes the attention limit (default: the "
        "delay cost of a wait at that limit)",
    )
    abandoned_share: float | None = Field(
        default=None, ge=0, le=1, description="measured; reported, not used in the decision"
    )

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        """A path must say its traffic and its latency, unless a log will fill them in."""
        if info.context and info.context.get("partial"):
            return self
        if self.requests_per_day is None:
            raise ValueError(
                f"path {self.name!r}: give requests_per_day, or a --log that measures this route"
            )
        if self.time_to_first_useful_ms is None and (
            not self.steps or any(step.latency is None for step in self.steps)
        ):
            raise ValueError(
                f"path {self.name!r}: give time_to_first_useful_ms, or a latency for every step"
            )
        return self

    @property
    def daily_requests(self) -> float:
        assert self.requests_per_day is not None  # checked by _complete
        return self.requests_per_day

    @property
    def delay_cost_per_s(self) -> float:
        """The cost of a second of delay the decision uses (0 when nobody said or derived it)."""
        return self.delay_cost_per_second_usd or 0.0

    @property
    def computed_latency(self) -> Latency:
        """Latency of a request that is computed now (not served from a cache or a store)."""
        if self.time_to_first_useful_ms is not None:
            return self.time_to_first_useful_ms.to_latency()
        total = Latency(0.0, 0.0)
        for step in self.steps:
            assert step.latency is not None  # checked by _has_latency
            one = step.latency.to_latency()
            total = total + Latency(one.p50_s * step.repeat, one.p95_s * step.repeat)
        return total

    @property
    def reliability_steps(self) -> tuple[StepReliability, ...]:
        return tuple(step.to_reliability() for step in self.steps)


class Prices(_Strict):
    """Prices the cost model uses; the defaults are placeholders to replace with your own."""

    instance_hour_usd: float = Field(default=2.50, ge=0, description="on-demand, always on")
    batch_instance_hour_usd: float = Field(default=1.00, ge=0, description="spot, pay per use")
    batch_api_discount: float = Field(
        default=0.5, ge=0, le=1, description="discount on per-request prices for batch jobs"
    )


class Policy(_Strict):
    """How capacity is run and which near-real-time windows are considered."""

    realtime_utilisation: float = Field(default=0.6, gt=0, le=1)
    near_real_time_utilisation: float = Field(default=0.85, gt=0, le=1)
    store_latency_ms: float = Field(
        default=10.0, ge=0, description="answering from a cache or a precomputed store"
    )
    windows_s: tuple[float, ...] = Field(
        default=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0), min_length=1
    )
    # The what-if replay. A progressive draft's first useful content: the local SmolLM2
    # draft measured by benchmarks/progressive_workload.py (docs/benchmarks.md, "draft (local
    # model)", rerun 2026-11-26 21:27 UTC on 2 cores: p50 88 ms, p95 150 ms).
    draft_first_useful_ms: LatencyInput = Field(
        default_factory=lambda: LatencyInput(p50_ms=88.0, p95_ms=150.0)
    )
    cache_ttl_s: float = Field(default=3600.0, gt=0, description="cache.*.ttl_s's default")


class Profile(_Strict):
    name: str = Field(min_length=1)
    prices: Prices = Prices()
    policy: Policy = Policy()
    paths: tuple[PathInput, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "defaults" not in data:
            return data
        data = dict(data)
        defaults = data.pop("defaults")
        if not isinstance(defaults, dict):
            raise ValueError("defaults must be a mapping of path fields")  # noqa: TRY004
        paths = data.get("paths")
        if isinstance(paths, list):
            data["paths"] = [
                {**defaults, **path} if isinstance(path, dict) else path for path in paths
            ]
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [path.name for path in self.paths]
        if len(names) != len(set(names)):
            raise ValueError(f"path names must be unique: {names}")
        return self

    def with_prices(self, overrides: dict[str, float]) -> Profile:
        return self._validated_copy(prices={**self.prices.model_dump(), **overrides})

    def with_paths(self, paths: tuple[PathInput, ...]) -> Profile:
        return self._validated_copy(paths=[path.model_dump() for path in paths])

    def _validated_copy(self, **changes: Any) -> Profile:
        try:
            return Profile.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ProfileError(describe(exc)) from exc


def parse_profile(data: Any, *, origin: str = "profile", partial: bool = False) -> Profile:
    """``partial``: paths may lack what a request log will measure (traffic, latency)."""
    try:
        return Profile.model_validate(data, context={"partial": partial})
    except ValidationError as exc:
        raise ProfileError(f"{origin}: {describe(exc)}") from exc


def load_profile(path: Path, *, partial: bool = False) -> Profile:
    """Read a profile from a ``.json`` file or a YAML file (``partial``: see parse_profile)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read the profile: {exc}") from exc
    return parse_profile(data, origin=str(path), partial=partial)


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``key.path: message; ...`` for a person to act on."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
        for error in exc.errors()
    )
