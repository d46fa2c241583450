"""The learned router at serving time: embedding -> probability that the strong tier is needed.

The shipped file (``data/learned_router.json``, written by ``nearline train-router``) holds a
logistic regression over the local sentence embedding: 384 weights and a bias, plus operating
points calibrated on cross-validated training scores. Serving needs only numpy and the
embedder; no scikit-learn.
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

ROUTER_FORMAT = "nearline-learned-router/1"
DEFAULT_ROUTER_PATH = Path(__file__).parent / "data" / "learned_router.json"
DEFAULT_OPERATING_POINT = "recover_80_percent"


class RouterFileError(Exception):
    """The router file is missing, malformed, or made for another embedding model."""


@dataclass(frozen=True, slots=True)
class RouterFile:
    embedding_model: str
    weights: tuple[float, ...]
    bias: float
    label: str
    l2: float
    thresholds: Mapping[str, float]  # operating point -> probability threshold
    score_quantiles: tuple[float, ...]  # 0 %, 1 %, ..., 100 % of cross-validated scores
    training: Mapping[str, Any] = field(default_factory=dict)  # provenance, for people

    def to_json(self) -> str:
        body = {
            "format": ROUTER_FORMAT,
            "embedding_model": self.embedding_model,
            "label": self.label,
            "l2": self.l2,
            "bias": _round(self.bias),
            "weights": [_round(w) for w in self.weights],
            "thresholds": {name: _round(t) for name, t in sorted(self.thresholds.items())},
            "score_quantiles": [_round(q) for q in self.score_quantiles],
            "training": dict(self.training),
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "router file") -> RouterFile:
        try:
            body = json.loads(text)
            if body.get("format") != ROUTER_FORMAT:
                raise RouterFileError(f"{origin}: not a {ROUTER_FORMAT} file")
            return cls(
                embedding_model=str(body["embedding_model"]),
                weights=tuple(float(w) for w in body["weights"]),
                bias=float(body["bias"]),
                label=str(body["label"]),
                l2=float(body["l2"]),
                thresholds={str(k): float(v) for k, v in body["thresholds"].items()},
                score_quantiles=tuple(float(q) for q in body["score_quantiles"]),
                training=dict(body.get("training", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RouterFileError(f"{origin}: {exc!r}") from exc


class LearnedRouter:
    """Predicts whether a prompt needs the strong tier.

    Pass the process's shared ``embedder`` when routing text; without one, the first text
    query loads the local embedding model (seconds). Embeddings can be passed directly.
    """

    def __init__(self, spec: RouterFile, embedder: Embedder | None = None) -> None:
        self.spec = spec
        self._weights = np.asarray(spec.weights, dtype=np.float64)
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
        return len(self._weights)

    def strong_probabilities(self, embeddings: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities for a ``(n, dim)`` matrix of L2-normalised embeddings."""
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {matrix.shape}")
        logits = np.clip(matrix @ self._weights + self.spec.bias, -40.0, 40.0)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)

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
    if embedder.name != spec.embedding_model or embedder.dim != len(spec.weights):
        raise RouterFileError(
            f"the router was trained on {spec.embedding_model} ({len(spec.weights)} dims), "
            f"not {embedder.name} ({embedder.dim} dims)"
        )


def _round(value: float) -> float:
    """Six significant digits: small diffs between runs, and far below what changes a route."""
    return float(f"{value:.6g}")
