"""A circuit breaker per deployment: take a failing one out, probe it back.

closed ──(N consecutive failures, or the failure ratio over the last W outcomes)──▶ open
open ──(cooldown elapsed; the next caller is the one probe)──▶ half-open
half-open ──probe succeeds──▶ closed      half-open ──probe fails──▶ open (cooldown again)

Only the outcome of a real attempt counts: a hedge loser that was cancelled is neither.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from nearline.config.routing import BreakerSettings


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateListener = Callable[[BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True: a failure
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a request go to this deployment now? In half-open, only one probe at a time."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._outcomes.clear()
            self._set(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._outcomes.append(False)
        # open: a late success of an attempt started before the breaker opened proves little

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._outcomes.append(True)
            if self._should_open():
                self._open()

    def release_probe(self) -> None:
        """The probe ended without an outcome (cancelled): let the next caller probe."""
        self._probe_in_flight = False

    def _should_open(self) -> bool:
        if self._consecutive_failures >= self._settings.consecutive_failures:
            return True
        if len(self._outcomes) < self._settings.min_calls:
            return False
        return sum(self._outcomes) / len(self._outcomes) >= self._settings.failure_ratio

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._settings.cooldown_s

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._consecutive_failures = 0
        self._outcomes.clear()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
