"""Train the learned router offline, on sentence embeddings, with numpy only.

Two L2-regularised logistic regressions predict whether the strong and whether the weak model
answers a question correctly; their difference is the expected quality gained by sending the
question to the strong tier, the score questions are ranked by. A one-feature logistic fit
(Platt scaling) turns that gain into the probability that the strong tier is *needed* (strong
right, weak wrong) without changing the ranking.

The regularisation strength is chosen by 5-fold cross-validation on the training split (folds
by a hash of the prompt), by mean APGR on MMLU; the calibration is fitted on the
cross-validated scores. The held-out test split is used only for the report. Newton's method
from zero makes training deterministic: the same data and embeddings give the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nearline.embed import Vectors
from nearline.gateway.routing.learned import sigmoid
from nearline.training.dataset import RoutingExample
from nearline.training.evaluation import evaluate

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

L2_CANDIDATES: tuple[float, ...] = (1.0, 3.0, 10.0)
FOLDS = 5
SELECTION_BENCHMARK = "mmlu"


@dataclass(frozen=True, slots=True)
class LogisticModel:
    weights: Vector
    bias: float

    def probabilities(self, features: Matrix | Vectors) -> Vector:
        return sigmoid(np.asarray(features, dtype=np.float64) @ self.weights + self.bias)


@dataclass(frozen=True, slots=True)
class GainModel:
    """P(strong model right) - P(weak model right): the quality routing to strong gains."""

    strong: LogisticModel
    weak: LogisticModel

    def gain(self, features: Matrix | Vectors) -> Vector:
        return self.strong.probabilities(features) - self.weak.probabilities(features)


@dataclass(frozen=True, slots=True)
class TrainingResult:
    model: GainModel
    calibration: LogisticModel  # one weight: gain -> P(strong needed)
    l2: float
    cv_apgr: dict[float, float]  # candidate strength -> mean cross-validated APGR on MMLU
    out_of_fold: Vector  # calibrated cross-validated probabilities of the training examples


def fit_logistic(
    features: Matrix | Vectors, labels: npt.NDArray[np.bool_], l2: float, iterations: int = 50
) -> LogisticModel:
    """Minimise log-loss + l2/2 * |w|^2 (bias not penalised) with Newton's method."""
    x = np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))])
    y = labels.astype(np.float64)
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = sigmoid(x @ theta)
        gradient = x.T @ (p - y) + penalty * theta
        curvature = (x * (p * (1.0 - p))[:, None]).T @ x
        step = np.linalg.solve(curvature + np.diag(penalty + 1e-9), gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return LogisticModel(weights=theta[:-1], bias=float(theta[-1]))


def fit_gain(
    features: Matrix | Vectors,
    strong: npt.NDArray[np.bool_],
    weak: npt.NDArray[np.bool_],
    l2: float,
) -> GainModel:
    return GainModel(fit_logistic(features, strong, l2), fit_logistic(features, weak, l2))


def fold_of(prompt: str, folds: int = FOLDS) -> int:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[8:16], "big") % folds


def train(
    examples: Sequence[RoutingExample],
    embeddings: Vectors,
    candidates: Sequence[float] = L2_CANDIDATES,
) -> TrainingResult:
    strong = np.array([example.strong_correct for example in examples])
    weak = np.array([example.weak_correct for example in examples])
    needed = strong & ~weak
    folds = np.array([fold_of(example.prompt) for example in examples])
    selected = np.array([example.benchmark == SELECTION_BENCHMARK for example in examples])
    out_of_fold: dict[float, Vector] = {}
    cv_apgr: dict[float, float] = {}
    for l2 in candidates:
        gains = np.zeros(len(examples))
        per_fold = []
        for fold in range(FOLDS):
            held = folds == fold
            model = fit_gain(embeddings[~held], strong[~held], weak[~held], l2)
            gains[held] = model.gain(embeddings[held])
            scored = held & selected
            per_fold.append(evaluate(gains[scored], strong[scored], weak[scored]).apgr)
        out_of_fold[l2] = gains
        cv_apgr[l2] = float(np.mean(per_fold))
    best = max(candidates, key=lambda l2: (cv_apgr[l2], -l2))
    calibration = fit_logistic(out_of_fold[best][:, None], needed, l2=0.0)
    if calibration.weights[0] <= 0:
        raise ValueError("the expected gain does not rise with the need for the strong model")
    return TrainingResult(
        model=fit_gain(embeddings, strong, weak, best),
        calibration=calibration,
        l2=best,
        cv_apgr=cv_apgr,
        out_of_fold=calibration.probabilities(out_of_fold[best][:, None]),
    )
