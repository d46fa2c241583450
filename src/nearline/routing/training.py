"""Train the learned router offline: L2-regularised logistic regression on sentence embeddings.

The label is "only the strong model answers correctly" (``RoutingExample.strong_needed``): the
questions where routing to the strong tier gains quality. The regularisation strength is chosen
by 5-fold cross-validation on the training split (folds by a hash of the prompt), by APGR on
MMLU; the held-out test split is used only for the final report. Training is deterministic
(Newton's method from zero), so the same data and embeddings give the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nearline.embed import Vectors
from nearline.routing.dataset import RoutingExample
from nearline.routing.evaluation import evaluate

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

L2_CANDIDATES: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS = 5
SELECTION_BENCHMARK = "mmlu"


@dataclass(frozen=True, slots=True)
class LogisticModel:
    weights: Vector
    bias: float

    def probabilities(self, features: Matrix | Vectors) -> Vector:
        return _sigmoid(np.asarray(features, dtype=np.float64) @ self.weights + self.bias)


@dataclass(frozen=True, slots=True)
class TrainingResult:
    model: LogisticModel
    l2: float
    cv_apgr: dict[float, float]  # candidate strength -> cross-validated APGR on MMLU
    out_of_fold: Vector  # cross-validated scores of the training examples, for thresholds


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
        p = _sigmoid(x @ theta)
        gradient = x.T @ (p - y) + penalty * theta
        hessian = (
            (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        )
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return LogisticModel(weights=theta[:-1], bias=float(theta[-1]))


def fold_of(prompt: str, folds: int = FOLDS) -> int:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[8:16], "big") % folds


def train(
    examples: Sequence[RoutingExample],
    embeddings: Vectors,
    candidates: Sequence[float] = L2_CANDIDATES,
) -> TrainingResult:
    labels = np.array([example.strong_needed for example in examples])
    folds = np.array([fold_of(example.prompt) for example in examples])
    selected = np.array([example.benchmark == SELECTION_BENCHMARK for example in examples])
    strong = np.array([example.strong_correct for example in examples])
    weak = np.array([example.weak_correct for example in examples])
    out_of_fold: dict[float, Vector] = {}
    cv_apgr: dict[float, float] = {}
    for l2 in candidates:
        scores = np.zeros(len(examples))
        for fold in range(FOLDS):
            held = folds == fold
            model = fit_logistic(embeddings[~held], labels[~held], l2)
            scores[held] = model.probabilities(embeddings[held])
        out_of_fold[l2] = scores
        cv_apgr[l2] = evaluate(scores[selected], strong[selected], weak[selected]).apgr
    best = max(candidates, key=lambda l2: (cv_apgr[l2], -l2))
    return TrainingResult(
        model=fit_logistic(embeddings, labels, best),
        l2=best,
        cv_apgr=cv_apgr,
        out_of_fold=out_of_fold[best],
    )


def _sigmoid(z: Vector) -> Vector:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))), dtype=np.float64)
