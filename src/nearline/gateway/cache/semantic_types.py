"""What the semantic tier's API speaks: thresholds, matches, statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nearline.gateway.cache.thresholds import Rule

Band = Literal["hit", "near"]


@dataclass(frozen=True, slots=True)
class SemanticThresholds:
    """Cosine similarity above which a guarded candidate is served (``hit``) or offered as a
    preliminary answer (``near``).

    Calibrated on QQP with benchmarks/semantic_calibration.py (docs/benchmarks.md): ``hit``
    keeps the false-hit rate at or under 1 %, ``near`` under 5 %.
    """

    hit: float = 0.9625
    near: float = 0.90

    def __post_init__(self) -> None:
        if not -1.0 <= self.near <= self.hit <= 1.0:
            raise ValueError("thresholds need -1 <= near <= hit <= 1")


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """A cached answer for a paraphrase of the query."""

    entry_id: int
    payload: bytes
    similarity: float
    band: Band
    cached_query: str
    partition: str = ""
    rule: Rule = "static"  # what decided the band (thresholds.py); "static" without learning
    bound: float | None = None  # the learned upper bound on P(wrong), where there is evidence


@dataclass(frozen=True, slots=True)
class SemanticStats:
    entries: int
    lookups: int
    hits: int
    near: int
    guard_rejections: int
    applied_changes: int
    learned_hits: int = 0  # hits below the static threshold, served on evidence
    added_keys: int = 0  # verified paraphrases added as keys of the answer they were served
