"""How well a router trades strong-model calls for quality, as RouteLLM measures it.

A router gives every question a score; sending the questions whose score is at or above a
threshold to the strong model and the rest to the weak one gives a point (share of strong
calls, accuracy). RouteLLM takes the thresholds at the 0 %, 10 %, ..., 100 % quantiles of the
scores (``routellm/evals/benchmarks.py``), and defines

* PGR (performance gap recovered) at a point = (accuracy - weak) / (strong - weak);
* APGR = the area under PGR against the share of strong calls (trapezoids over those points);
  a random router scores about 0.5, a perfect one close to 1;
* the strong-call share needed for 50 % / 80 % of the gap: where the curve first reaches it
  (RouteLLM interpolates; here the first crossing, linearly between the two points around it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
ROUTELLM_POINTS = 10


@dataclass(frozen=True, slots=True)
class CurvePoint:
    strong_share: float
    accuracy: float


@dataclass(frozen=True, slots=True)
class RouterResult:
    apgr: float
    strong_share_for_50: float | None  # None: the curve never gets there
    strong_share_for_80: float | None
    strong_accuracy: float
    weak_accuracy: float


def quality_curve(
    scores: Scores, strong_correct: Flags, weak_correct: Flags, points: int = ROUTELLM_POINTS
) -> list[CurvePoint]:
    """Points at RouteLLM's quantile thresholds, sorted by share of strong calls."""
    thresholds = np.quantile(scores, np.linspace(0.0, 1.0, points + 1))
    curve = []
    for index, threshold in enumerate(thresholds):
        last = index == len(thresholds) - 1
        to_strong = scores > threshold if last else scores >= threshold
        correct = np.where(to_strong, strong_correct, weak_correct)
        curve.append(CurvePoint(float(to_strong.mean()), float(correct.mean())))
    return sorted(curve, key=lambda point: (point.strong_share, point.accuracy))


def evaluate(
    scores: Scores, strong_correct: Flags, weak_correct: Flags, points: int = ROUTELLM_POINTS
) -> RouterResult:
    strong = float(strong_correct.mean())
    weak = float(weak_correct.mean())
    if strong <= weak:
        raise ValueError("the strong model must be more accurate than the weak one")
    curve = quality_curve(scores, strong_correct, weak_correct, points)
    shares = np.array([point.strong_share for point in curve])
    recovered = (np.array([point.accuracy for point in curve]) - weak) / (strong - weak)
    area = float(np.sum((shares[1:] - shares[:-1]) * (recovered[1:] + recovered[:-1]) / 2.0))
    return RouterResult(
        apgr=area,
        strong_share_for_50=_first_crossing(shares, recovered, 0.5),
        strong_share_for_80=_first_crossing(shares, recovered, 0.8),
        strong_accuracy=strong,
        weak_accuracy=weak,
    )


def _first_crossing(shares: Scores, recovered: Scores, target: float) -> float | None:
    for index in range(len(shares)):
        if recovered[index] >= target:
            if index == 0:
                return float(shares[0])
            x0, x1 = shares[index - 1], shares[index]
            y0, y1 = recovered[index - 1], recovered[index]
            return float(x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    return None
