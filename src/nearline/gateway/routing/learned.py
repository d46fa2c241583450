"""The learned router at serving time: embedding -> probability that the strong tier is needed.

The shipped file (``data/learned_router.json``, written by ``nearline train-router``) holds two
logistic regressions over the local sentence embedding, one predicting that the strong model
answers correctly and one that the weak model does; their difference is the expected quality
gained by routing to the strong tier. A calibration (slope and intercept) turns that gain into
the probability that the strong tier is *needed* — strong right, weak wrong — without
changing the order of prompts. Serving needs numpy and the embedder; no scikit-learn.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nearline.embed import Embedder, load_embedder

ROUTER_FORMAT = "nearline-learned-router/2"
DEFAULT_ROUTER_PATH = Path(__file__).parent / "data" / "learned_router.json"
DEFAULT_OPERATING_POINT = "recover_80_percent"

Floats = npt.NDArray[np.float64]


class RouterFileError(Exception):
    """The router file is missing, malformed, or made for another embedding model."""


def sigmoid(z: Floats) -> Floats:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class RouterFile:
    embedding_model: str
    strong_weights: tuple[float, ...]  # P(strong model right | embedding)
    strong_bias: float
    weak_weights: tuple[float, ...]  # P(weak model right | embedding)
    weak_bias: float
    calibration: tuple[float, float]  # slope, intercept: gain -> P(strong needed)
    l2: float
    thresholds: Mapping[str, float]  # operating point -> probability threshold
    score_quantiles: tuple[float, ...]  # 0 %, 1 %, ..., 100 % of cross-validated probabilities
    training: Mapping[str, Any] = field(default_factory=dict)  # provenance, for people

    def to_json(self) -> str:
        body = {
            "format": ROUTER_FORMAT,
            "embedding_model": self.embedding_model,
            "strong_weights": _rounded(self.strong_weights),
            "strong_bias": _round(self.strong_bias),
            "weak_weights": _rounded(self.weak_weights),
            "weak_bias": _round(self.weak_bias),
            "calibration": _rounded(self.calibration),
            "l2": self.l2,
            "thresholds": {name: _round(t) for name, t in sorted(self.thresholds.items())},
            "score_quantiles": _rounded(self.score_quantiles),
            "training": dict(self.training),
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "router file") -> RouterFile:
        try:
            body = json.loads(text)
            if body.get("format") != ROUTER_FORMAT:
                raise RouterFileError(f"{origin}: not a {ROUTER_FORMAT} file")
            slope, intercept = (float(v) for v in body["calibration"])
            spec = cls(
                embedding_model=str(body["embedding_model"]),
                strong_weights=tuple(float(w) for w in body["strong_weights"]),
                strong_bias=float(body["strong_bias"]),
                weak_weights=tuple(float(w) for w in body["weak_weights"]),
                weak_bias=float(body["weak_bias"]),
                calibration=(slope, intercept),
                l2=float(body["l2"]),
                thresholds={str(k): float(v) for k, v in body["thresholds"].items()},
                score_quantiles=tuple(float(q) for q in body["score_quantiles"]),
                training=dict(body.get("training", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RouterFileError(f"{origin}: {exc!r}") from exc
        if len(spec.strong_weights) != len(spec.weak_weights):
            raise RouterFileError(f"{origin}: the two models have different dimensions")
        return spec


class LearnedRouter:
    """Predicts whether a prompt needs the strong tier.

    Pass the process's shared ``embedder`` when routing text; without one, the first text
    query loads the local embedding model (seconds). Embeddings can be passed directly.
    """

    def __init__(self, spec: RouterFile, embedder: Embedder | None = None) -> None:
        self.spec = spec
        self._strong = np.asarray(spec.strong_weights, dtype=np.float64)
        self._weak = np.asarray(spec.weak_weights, dtype=np.float64)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        if embedder is not None:
            _check_embedder(spec, embedder)

    @classmethod
    def load(cls, path: Path | None = None, *, embedder: Embedder | None = None) -> LearnedRouter:
        source = path or DEFAULT_ROUTER_PATH
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise RouterFileError(f"{source}: {exc}") from exc
        return cls(RouterFile.from_json(text, origin=str(source)), embedder)

    @property
    def dim(self) -> int:
        return len(self._strong)

    def expected_gains(self, embeddings: npt.ArrayLike) -> Floats:
        """P(strong right) - P(weak right) for a ``(n, dim)`` matrix of embeddings."""
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {matrix.shape}")
        strong = sigmoid(matrix @ self._strong + self.spec.strong_bias)
        return strong - sigmoid(matrix @ self._weak + self.spec.weak_bias)

    def strong_probabilities(self, embeddings: npt.ArrayLike) -> Floats:
        """P(strong tier needed) for a ``(n, dim)`` matrix of L2-normalised embeddings."""
        slope, intercept = self.spec.calibration
        return sigmoid(slope * self.expected_gains(embeddings) + intercept)

    def strong_probability(self, query: str | npt.ArrayLike) -> float:
        """Probability that only the strong tier answers ``query`` (a text or its embedding)."""
        vector = self._embed([query])[0] if isinstance(query, str) else np.asarray(query)
        return float(self.strong_probabilities(vector.reshape(1, -1))[0])

    def needs_strong(self, query: str | npt.ArrayLike, threshold: float | None = None) -> bool:
        """``threshold`` defaults to the operating point that recovered 80 % of the gap."""
        limit = self.spec.thresholds[DEFAULT_OPERATING_POINT] if threshold is None else threshold
        return self.strong_probability(query) >= limit

    def threshold_for_strong_share(self, share: float) -> float:
        """The threshold sending about ``share`` of (training-like) traffic to the strong tier."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], not {share}")
        levels = np.linspace(0.0, 1.0, len(self.spec.score_quantiles))
        return float(np.interp(1.0 - share, levels, self.spec.score_quantiles))

    def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = load_embedder()
                _check_embedder(self.spec, self._embedder)
            embedder = self._embedder
        return embedder.encode(texts)


def _check_embedder(spec: RouterFile, embedder: Embedder) -> None:
    dim = len(spec.strong_weights)
    if embedder.name != spec.embedding_model or embedder.dim != dim:
        raise RouterFileError(
            f"the router was trained on {spec.embedding_model} ({dim} dims), "
            f"not {embedder.name} ({embedder.dim} dims)"
        )


def _round(value: float) -> float:
    """Six significant digits: small diffs between runs, and far below what changes a route."""
    return float(f"{value:.6g}")


def _rounded(values: Sequence[float]) -> list[float]:
    return [_round(value) for value in values]
