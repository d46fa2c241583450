"""What the limit counters share: subjects, decisions, OpenAI's headers and errors.

A *subject* is what a limit belongs to: a key (``key:<id>``) or a tenant (``tenant:<name>``).
Requests and tokens are counted in a sliding 60-second window of one-second buckets (the
sum of the last 60 buckets, the current one included); spend is summed per UTC day or month.
Both backends (``memory.py``, ``redis_counters.py``) implement ``Counters`` with the same
semantics; a refused request is not counted.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nearline.config import KeyLimits
from nearline.core.errors import NearlineError

WINDOW_S = 60
Refusal = Literal["requests", "tokens", "budget"]


@dataclass(frozen=True, slots=True)
class Subject:
    """A key or a tenant with the limits that apply to it."""

    scope: Literal["key", "tenant"]
    id: str
    limits: KeyLimits

    @property
    def name(self) -> str:
        return f"{self.scope}:{self.id}"


@dataclass(frozen=True, slots=True)
class Standing:
    """One subject's counters as a decision saw them (the admitted request included)."""

    requests: int = 0
    requests_reset_ms: int = 0  # until the oldest counted request leaves the window
    tokens: int = 0
    tokens_reset_ms: int = 0
    spent_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Admitted (``refused is None``) or not, and why; what every subject stood at."""

    refused: Refusal | None
    retry_after_ms: int
    bucket: int  # the second the request was counted in (to give it back)
    standing: tuple[Standing, ...]
    refused_by: Subject | None = None


class Counters(Protocol):
    """Sliding-window request/token counters and period spend, per subject."""

    async def acquire(self, subjects: Sequence[Subject]) -> Decision:
        """Check every subject's limits; if all pass, count one request for each (atomic)."""
        ...

    def add_tokens(self, subjects: Sequence[Subject], tokens: int) -> None:
        """Count ``tokens`` (may be negative: a correction) now; never waits."""
        ...

    def give_back(self, subjects: Sequence[Subject], bucket: int) -> None:
        """Uncount an admitted request (a cache hit, with ``count_cache_hits: false``)."""
        ...

    def add_spend(self, subjects: Sequence[Subject], usd: float) -> None:
        """Add spend to each subject's current budget period; never waits."""
        ...

    async def flush(self) -> None:
        """Send what ``add_tokens``, ``give_back`` and ``add_spend`` buffered (shared counters
        send it every ``limits.flush_interval_s`` on their own); a no-op where nothing is."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def period_label(period: str, now: float | None = None) -> str:
    """``2026-12-01`` (day) or ``2026-12`` (month), UTC."""
    t = time.gmtime(time.time() if now is None else now)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}" + (f"-{t.tm_mday:02d}" if period == "day" else "")


def period_start(period: str, now: float | None = None) -> float:
    """Unix seconds at the start of the current UTC day or month."""
    t = time.gmtime(time.time() if now is None else now)
    day = t.tm_mday if period == "day" else 1
    return float(calendar.timegm((t.tm_year, t.tm_mon, day, 0, 0, 0)))


def format_reset(ms: int) -> str:
    """OpenAI's spelling of a duration: ``20ms``, ``1s``, ``6m0s``, ``1.5s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_headers(subjects: Sequence[Subject], standing: Sequence[Standing]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest subject."""
    headers: dict[str, str] = {}
    requests = [
        (s.limits.rpm - u.requests, s.limits.rpm, u.requests_reset_ms)
        for s, u in zip(subjects, standing, strict=True)
        if s.limits.rpm is not None
    ]
    if requests:
        remaining, limit, reset = min(requests)
        headers["x-ratelimit-limit-requests"] = str(limit)
        headers["x-ratelimit-remaining-requests"] = str(max(remaining, 0))
        headers["x-ratelimit-reset-requests"] = format_reset(reset)
    tokens = [
        (s.limits.tpm - u.tokens, s.limits.tpm, u.tokens_reset_ms)
        for s, u in zip(subjects, standing, strict=True)
        if s.limits.tpm is not None
    ]
    if tokens:
        remaining, limit, reset = min(tokens)
        headers["x-ratelimit-limit-tokens"] = str(limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(remaining, 0))
        headers["x-ratelimit-reset-tokens"] = format_reset(reset)
    return headers


class RateLimited(NearlineError):
    """A key's or tenant's requests or tokens per minute are used up (429, Retry-After)."""

    status_code = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceeded(NearlineError):
    """A key's or tenant's budget for this period is spent (429 ``insufficient_quota``)."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


def refusal_error(decision: Decision, headers: dict[str, str]) -> NearlineError:
    """The OpenAI-shaped 429 for a refused decision, with the rate-limit headers."""
    subject = decision.refused_by
    who = "this API key" if subject is None or subject.scope == "key" else "this tenant"
    error: NearlineError
    if decision.refused == "budget":
        limits = subject.limits if subject is not None else KeyLimits()
        error = QuotaExceeded(
            f"You exceeded your current quota: {who} has spent its budget of "
            f"${limits.budget_usd:g} for this {limits.budget_period} (UTC)."
        )
        error.extra_headers["x-should-retry"] = "false"  # the OpenAI SDKs would retry a 429
    else:
        kind = decision.refused or "requests"
        limit = (
            (subject.limits.rpm if kind == "requests" else subject.limits.tpm)
            if subject is not None
            else None
        )
        unit = "RPM" if kind == "requests" else "TPM"
        error = RateLimited(
            f"Rate limit reached for {who} on {kind} per min ({unit}): limit {limit}. "
            f"Please try again in {format_reset(decision.retry_after_ms)}.",
            retry_after_s=max(decision.retry_after_ms / 1000, 1.0),
        )
        error.error_type = kind
    error.extra_headers.update(headers)
    return error


@dataclass(slots=True)
class Window:
    """One subject's one-second buckets (the in-memory backend's state)."""

    buckets: dict[int, int] = field(default_factory=dict)

    def used(self, now_s: int) -> int:
        stale = [b for b in self.buckets if b <= now_s - WINDOW_S]
        for b in stale:
            del self.buckets[b]
        return sum(self.buckets.values())

    def reset_ms(self, now: float) -> int:
        if not self.buckets:
            return 0
        return max(0, int(((min(self.buckets) + WINDOW_S) - now) * 1000))

    def wait_ms(self, used: int, limit: int, now: float) -> int:
        """Until ``used + 1 <= limit`` as old buckets leave the window."""
        freed = 0
        for b in sorted(self.buckets):
            freed += self.buckets[b]
            if used - freed + 1 <= limit:
                return max(0, int(((b + WINDOW_S) - now) * 1000))
        return WINDOW_S * 1000
