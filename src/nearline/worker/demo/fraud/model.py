"""The fraud model: gradient-boosted trees trained on the generator's labelled transactions.

``train`` generates history, computes the streaming features exactly as the worker will, fits
scikit-learn's ``HistGradientBoostingClassifier`` and measures it on held-out later data;
``save``/``load`` keep it in a joblib file (load only files you made: joblib is pickle).

scikit-learn, joblib and threadpoolctl are the ``demo`` extra (``pip install 'nearline[demo]'``):
imported when a model is trained, loaded or run, never when the CLI starts.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nearline.core.extras import missing_extra
from nearline.worker.demo.fraud.features import (
    CARD_WINDOW_MS,
    FEATURE_NAMES,
    feature_matrix,
    window_updates,
)
from nearline.worker.demo.fraud.generator import GeneratorSettings, TransactionGenerator
from nearline.worker.state import MemoryWindowState

_FORMAT = "nearline-fraud-model/1"


def _demo_module(name: str) -> Any:
    """``name`` from the demo extra; a clear error naming the extra when it is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise missing_extra("demo", "nearline demo fraud", exc) from exc


@functools.cache
def _openmp() -> Any:
    return _demo_module("threadpoolctl").ThreadpoolController()


@dataclass(frozen=True)
class TrainingReport:
    transactions: int
    fraud_share: float
    roc_auc: float
    average_precision: float


@dataclass
class FraudModel:
    classifier: Any
    report: TrainingReport

    def fraud_probability(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """CPU-bound: call it in a thread from async code.

        Runs on one OpenMP thread: on a busy machine, spinning OpenMP threads fighting the
        event loop and the broker for cores made a batch up to ten times slower.
        """
        if len(features) == 0:
            return np.zeros(0)
        with _openmp().limit(limits=1, user_api="openmp"):
            probabilities: npt.NDArray[np.float64] = self.classifier.predict_proba(features)[:, 1]
        return probabilities

    def save(self, path: Path) -> None:
        _demo_module("joblib").dump(
            {"format": _FORMAT, "classifier": self.classifier, "report": self.report}, path
        )

    @classmethod
    def load(cls, path: Path) -> FraudModel:
        stored = _demo_module("joblib").load(path)
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a nearline fraud model file")
        return cls(stored["classifier"], stored["report"])


def labelled_features(
    count: int, seed: int, rate_per_s: float = 500.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int_]]:
    generator = TransactionGenerator(GeneratorSettings(seed=seed))
    transactions = generator.take(count, start_ms=0, rate_per_s=rate_per_s)
    state = MemoryWindowState(CARD_WINDOW_MS)
    stats = state.add_now(window_updates(transactions))
    labels = np.asarray([int(tx["is_fraud"]) for tx in transactions])
    return feature_matrix(transactions, stats), labels


def train(count: int = 120_000, seed: int = 1) -> FraudModel:
    features, labels = labelled_features(count, seed)
    split = int(0.8 * count)  # train on the past, test on the future
    ensemble, metrics = _demo_module("sklearn.ensemble"), _demo_module("sklearn.metrics")
    classifier = ensemble.HistGradientBoostingClassifier(
        max_iter=80, max_leaf_nodes=15, learning_rate=0.15, random_state=0
    )
    classifier.fit(features[:split], labels[:split])
    held_out = classifier.predict_proba(features[split:])[:, 1]
    report = TrainingReport(
        transactions=count,
        fraud_share=float(labels.mean()),
        roc_auc=float(metrics.roc_auc_score(labels[split:], held_out)),
        average_precision=float(metrics.average_precision_score(labels[split:], held_out)),
    )
    return FraudModel(classifier, report)


def load_or_train(path: Path, count: int = 120_000) -> tuple[FraudModel, bool]:
    """The model in ``path``; trained (on ``count`` generated transactions) and saved there
    first if the file does not exist."""
    if path.exists():
        return FraudModel.load(path), False
    model = train(count)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model, True


__all__ = ["FEATURE_NAMES", "FraudModel", "TrainingReport", "load_or_train", "train"]
