"""Compound reliability of a pipeline: every step must succeed, so successes multiply.

Twenty steps that each succeed 95 % of the time succeed together only 0.95**20 ≈ 36 % of the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepReliability:
    """One pipeline step: its success rate per attempt, how often it runs, how often it retries."""

    name: str
    success: float
    repeat: int = 1
    retries: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.success <= 1.0:
            raise ValueError(f"step {self.name!r}: success must be in [0, 1], not {self.success}")
        if self.repeat < 1 or self.retries < 0:
            raise ValueError(f"step {self.name!r}: repeat must be >= 1 and retries >= 0")

    @property
    def success_with_retries(self) -> float:
        """One run of the step fails only if the first attempt and every retry fail."""
        return 1.0 - (1.0 - self.success) ** (1 + self.retries)

    @property
    def success_over_repeats(self) -> float:
        return self.success_with_retries**self.repeat


def compound_reliability(steps: Sequence[StepReliability]) -> float:
    """Probability that a request passes every step (1.0 for a path without steps)."""
    return math.prod(step.success_over_repeats for step in steps)


def weakest_step(steps: Sequence[StepReliability]) -> StepReliability | None:
    """The step that loses the most requests, the first one to harden."""
    return min(steps, key=lambda step: step.success_over_repeats, default=None)
