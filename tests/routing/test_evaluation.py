"""APGR and the strong-call shares, on a hand-worked case and on a random router."""

from __future__ import annotations

import numpy as np
import pytest

from nearline.training.evaluation import evaluate, quality_curve


def test_hand_worked_curve_and_apgr() -> None:
    scores = np.array([0.9, 0.7, 0.4, 0.1])
    strong = np.array([True, True, True, False])  # accuracy 0.75
    weak = np.array([False, True, False, True])  # accuracy 0.50, gap 0.25
    # thresholds at the 0, 25, 50, 75, 100 % quantiles: 0.1, 0.325, 0.55, 0.75, 0.9 (> for the
    # last). Strong share and accuracy: 1.0 -> 0.75; 0.75 -> 1.0 (the 0.1 question goes to the
    # weak model, which is right); 0.5 -> 0.75; 0.25 -> 0.75; 0 -> 0.5.
    curve = quality_curve(scores, strong, weak, points=4)
    assert [(p.strong_share, p.accuracy) for p in curve] == [
        (0.0, 0.5),
        (0.25, 0.75),
        (0.5, 0.75),
        (0.75, 1.0),
        (1.0, 0.75),
    ]
    # PGR = (acc - 0.5) / 0.25: 0, 1, 1, 2, 1; trapezoids of width 0.25:
    # 0.25 x (0.5 + 1 + 1.5 + 1.5) = 1.125 (a router can beat the strong model alone)
    result = evaluate(scores, strong, weak, points=4)
    assert result.apgr == pytest.approx(1.125)
    # PGR goes 0 -> 1 between shares 0 and 0.25: 50 % at 0.125, 80 % at 0.2
    assert result.strong_share_for_50 == pytest.approx(0.125)
    assert result.strong_share_for_80 == pytest.approx(0.2)
    assert (result.strong_accuracy, result.weak_accuracy) == (0.75, 0.5)


def test_a_random_router_recovers_about_half() -> None:
    rng = np.random.default_rng(0)
    strong = rng.random(20_000) < 0.8
    weak = rng.random(20_000) < 0.6
    result = evaluate(rng.random(20_000), strong, weak)
    assert result.apgr == pytest.approx(0.5, abs=0.05)
    assert result.strong_share_for_50 == pytest.approx(0.5, abs=0.1)


def test_an_oracle_router_recovers_the_gap_early() -> None:
    rng = np.random.default_rng(1)
    strong = rng.random(5_000) < 0.8
    weak = rng.random(5_000) < 0.6
    oracle = strong.astype(float) - weak.astype(float) + rng.random(5_000) * 0.01
    result = evaluate(oracle, strong, weak)
    assert result.apgr > 0.9
    assert result.strong_share_for_80 is not None
    assert result.strong_share_for_80 < 0.3


def test_a_weak_model_that_is_not_weaker_is_rejected() -> None:
    flags = np.array([True, False])
    with pytest.raises(ValueError, match="more accurate"):
        evaluate(np.array([0.1, 0.2]), flags, flags)
