"""Learned serving thresholds for the semantic tier, under a user's error bound.

One global similarity threshold is the limit of the static tier: right and wrong matches
overlap in similarity, and where it is safe to serve differs from place to place. Here the
tier learns it from its own traffic: every candidate match whose cached answer was compared
with a fresh answer from the model (an :class:`Outcome`: similarity, right or wrong) is
evidence, kept per partition (never pooled across tenants, models, prompts or parameters:
the neighbourhood) and per entry.

The decision for a candidate at similarity ``s`` (after the guard accepted it):

* with no evidence, the calibrated static rule: serve iff ``s >= static_hit``;
* **learned**: serve iff an upper confidence bound on ``P(wrong | s)`` is at most
  ``max_error_rate``. The bound assumes only that a closer match is not more often wrong
  (``P(wrong | s)`` non-increasing in ``s``): the outcomes observed at similarities in
  ``[s - w, s]`` were then at least as often wrong as a match at ``s``, so the
  Clopper-Pearson upper bound of their wrong share bounds ``P(wrong | s)``. Several windows
  ``w`` are tried; the confidence is split over them (Bonferroni), so the minimum is still
  a bound at ``confidence``. The bound pools the partition's evidence: one entry never sees
  the hundreds of outcomes a 1 % bound needs (zero wrong out of n bounds the rate by about
  4.4/n here);
* an entry once verified wrong at a similarity ``>= s`` is not served at ``s`` (nor above
  the static threshold), and a partition whose evidence puts the *lower* bound of the error
  around ``s`` above ``max_error_rate`` stops serving there even above the static threshold.

**Per-request mode** (``per_request=True``) bounds instead what the issue's targets count:
the share of *requests* answered wrongly — serve every match at or above ``s`` iff an upper
confidence bound on (wrong candidates at ``>= s``) / (lookups) is at most the bound
(:meth:`LearnedThresholds.request_bound`). A single prompt may then be served with a
higher chance of being wrong, as long as such prompts are rare enough.

The state is plain counts (similarity bins per partition, the last outcomes per entry); it
is written to the snapshot and rebuilt from the shared store's outcome log (semantic.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from nearline.gateway.cache.bounds import (
    binom_cdf,
    lower_bound,
    poisson_upper,
    upper_bound,
    weighted_poisson_upper,
    within,
)

Rule = Literal["static", "learned", "declined", "vetoed"]

BIN_WIDTH = 0.0025
LOWEST = 0.5  # similarities below this are not kept (never served)
_BINS = round((1.0 - LOWEST) / BIN_WIDTH) + 1
ENTRY_OUTCOMES = 64  # the most recent outcomes kept per entry


@dataclass(frozen=True, slots=True)
class Outcome:
    """A candidate match checked against a fresh answer: was the cached answer right?"""

    partition: str
    entry_id: int
    similarity: float
    correct: bool
    served: bool = False  # a served match verified on a sample (else a free comparison)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to serve a candidate, by which rule, and the error bound that decided it."""

    serve: bool
    rule: Rule
    bound: float | None = None  # upper confidence bound on P(wrong | s), if evidence exists


@dataclass(frozen=True, slots=True)
class LearnedStats:
    partitions: int
    entries: int
    outcomes: int
    wrong: int


def _bin(similarity: float) -> int:
    return max(0, min(_BINS - 1, int((similarity - LOWEST) / BIN_WIDTH)))


class _Bins:
    """Counts of outcomes (all, wrong) per similarity bin, with window sums."""

    __slots__ = ("n", "wrong", "wrong_served")

    def __init__(self) -> None:
        self.n = [0] * _BINS
        self.wrong = [0] * _BINS
        self.wrong_served = [0] * _BINS  # of ``wrong``: served matches, seen on a sample

    def add(self, similarity: float, correct: bool, served: bool) -> None:
        index = _bin(similarity)
        self.n[index] += 1
        self.wrong[index] += 0 if correct else 1
        self.wrong_served[index] += 1 if served and not correct else 0

    def window(self, low: float, high: float) -> tuple[int, int]:
        start, end = _bin(low), _bin(high) + 1
        return sum(self.wrong[start:end]), sum(self.n[start:end])


class LearnedThresholds:
    """Evidence per partition and entry, and the serving decision it supports.

    ``max_error_rate``: the most a served match may be wrong, with ``confidence``.
    ``static_hit``: the calibrated threshold used where there is no evidence.
    """

    def __init__(
        self,
        max_error_rate: float,
        *,
        static_hit: float,
        confidence: float = 0.95,
        windows: tuple[float, ...] = (0.005, 0.01, 0.02, 0.04),
        demote_min_outcomes: int = 20,
        per_request: bool = False,
        verify_rate: float = 1.0,
        min_lookups: int = 100,
    ) -> None:
        if not 0.0 < max_error_rate < 1.0:
            raise ValueError("max_error_rate must be in (0, 1)")
        if not 0.5 <= confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        self.max_error_rate = max_error_rate
        self.static_hit = static_hit
        self.confidence = confidence
        self.windows = windows
        self._alpha = (1.0 - confidence) / len(windows)  # Bonferroni over the windows
        self._demote_min = demote_min_outcomes
        self._partitions: dict[str, _Bins] = {}
        self.per_request = per_request
        self._verify_rate = verify_rate
        self._min_lookups = min_lookups
        self._lookups: dict[str, int] = {}
        self._entries: dict[int, tuple[str, deque[tuple[float, bool]]]] = {}
        self._outcomes = self._wrong = 0

    # -- evidence -------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        if outcome.similarity < LOWEST:
            return
        self._partitions.setdefault(outcome.partition, _Bins()).add(
            outcome.similarity, outcome.correct, outcome.served
        )
        partition, history = self._entries.setdefault(
            outcome.entry_id, (outcome.partition, deque(maxlen=ENTRY_OUTCOMES))
        )
        if partition == outcome.partition:  # an entry id names one partition's entry only
            history.append((outcome.similarity, outcome.correct))
        self._outcomes += 1
        self._wrong += 0 if outcome.correct else 1

    def count_lookup(self, partition: str) -> None:
        """One more request looked up in ``partition`` (the per-request bound's trials)."""
        self._lookups[partition] = self._lookups.get(partition, 0) + 1

    def forget_entries(self, keep: set[int]) -> None:
        """Drop the per-entry evidence of entries no longer cached (their partition's
        counts stay: they describe the neighbourhood, not the entry)."""
        for entry_id in [entry_id for entry_id in self._entries if entry_id not in keep]:
            del self._entries[entry_id]

    def purge(self, doomed: Callable[[str], bool]) -> None:
        """Forget everything learnt in the partitions ``doomed`` says yes to."""
        for partition in [p for p in self._partitions if doomed(p)]:
            del self._partitions[partition]
        for partition in [p for p in self._lookups if doomed(p)]:
            del self._lookups[partition]
        for entry_id in [e for e, (p, _) in self._entries.items() if doomed(p)]:
            del self._entries[entry_id]

    # -- the decision ---------------------------------------------------------------------

    def bound(self, partition: str, similarity: float) -> float | None:
        """An upper confidence bound on ``P(wrong | similarity)`` within ``max_error_rate``
        that the partition's evidence supports (the first window that gives one), or
        ``None`` if none does."""
        bins = self._partitions.get(partition)
        if bins is None:
            return None
        for width in self.windows:
            wrong, n = bins.window(similarity - width, similarity)
            if within(wrong, n, self.max_error_rate, self._alpha):
                return upper_bound(wrong, n, self._alpha)
        return None

    def decide(self, partition: str, entry_id: int, similarity: float) -> Decision:
        entry = self._entries.get(entry_id)
        if (
            entry is not None
            and entry[0] == partition
            and any(not correct and sim >= similarity for sim, correct in entry[1])
        ):
            return Decision(False, "vetoed")
        if self.per_request:
            per_request = self.request_bound(partition, similarity)
            if similarity >= self.static_hit:  # per request, static hits are within budget
                return Decision(True, "static", per_request)
            if per_request is not None and per_request <= self.max_error_rate:
                return Decision(True, "learned", per_request)
            return Decision(False, "declined", per_request)
        bound = self.bound(partition, similarity)
        if bound is not None:
            rule: Rule = "learned" if similarity < self.static_hit else "static"
            return Decision(True, rule, min(bound, self.max_error_rate))
        if similarity >= self.static_hit:
            if self._clearly_worse(partition, similarity):
                return Decision(False, "declined", bound)
            return Decision(True, "static", bound)
        return Decision(False, "declined", bound)

    def request_bound(self, partition: str, similarity: float) -> float | None:
        """Per-request mode: an upper confidence bound on the share of this partition's
        requests that get a wrong answer if every match at ``similarity`` or above is
        served. Each lookup is a trial; wrong candidates seen unserved count once, wrong
        served matches seen on a ``verify_rate`` sample count ``1 / verify_rate`` times
        (one bound on that weighted count: Fay and Feuer's gamma method, bounds.py; it is
        Garwood's with no sampled count). ``None`` before ``min_lookups`` requests."""
        bins = self._partitions.get(partition)
        lookups = self._lookups.get(partition, 0)
        if bins is None or lookups < self._min_lookups:
            return None
        start = _bin(similarity)
        wrong, served = sum(bins.wrong[start:]), sum(bins.wrong_served[start:])
        weight = 1.0 / self._verify_rate
        unserved = wrong - served
        bound = weighted_poisson_upper(
            unserved + served * weight,
            unserved + served * weight * weight,
            weight,
            1.0 - self.confidence,
        )
        return bound / lookups

    def _clearly_worse(self, partition: str, similarity: float) -> bool:
        """Evidence around ``similarity`` says the error is above the bound (confidently)."""
        bins = self._partitions.get(partition)
        if bins is None:
            return False
        wrong, n = bins.window(similarity - self.windows[0], similarity + self.windows[0])
        if n < self._demote_min or wrong == 0:
            return False
        # the lower bound is above the rate iff P(X >= wrong | rate) < 1 - confidence
        return 1.0 - binom_cdf(wrong - 1, n, self.max_error_rate) < 1.0 - self.confidence

    # -- persistence ----------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        return {
            "bin_width": BIN_WIDTH,
            "lowest": LOWEST,
            "partitions": {
                partition: [
                    [index, bins.n[index], bins.wrong[index], bins.wrong_served[index]]
                    for index in range(_BINS)
                    if bins.n[index]
                ]
                for partition, bins in self._partitions.items()
            },
            "entries": [
                [entry_id, partition, [[sim, correct] for sim, correct in history]]
                for entry_id, (partition, history) in self._entries.items()
            ],
            "outcomes": self._outcomes,
            "wrong": self._wrong,
            "lookups": dict(self._lookups),
        }

    def load_document(self, document: dict[str, Any]) -> None:
        """Replace the state with a document from :meth:`to_document`; ``ValueError`` if it
        was written with another binning."""
        if document.get("bin_width") != BIN_WIDTH or document.get("lowest") != LOWEST:
            raise ValueError("learned thresholds were saved with another binning")
        self._partitions = {}
        for partition, rows in document["partitions"].items():
            bins = _Bins()
            for index, n, wrong, *served in rows:
                bins.n[int(index)], bins.wrong[int(index)] = int(n), int(wrong)
                bins.wrong_served[int(index)] = int(served[0]) if served else 0
            self._partitions[str(partition)] = bins
        self._entries = {
            int(entry_id): (
                str(partition),
                deque(((float(s), bool(c)) for s, c in history), maxlen=ENTRY_OUTCOMES),
            )
            for entry_id, partition, history in document["entries"]
        }
        self._outcomes, self._wrong = int(document["outcomes"]), int(document["wrong"])
        self._lookups = {str(p): int(n) for p, n in document.get("lookups", {}).items()}

    @property
    def stats(self) -> LearnedStats:
        return LearnedStats(len(self._partitions), len(self._entries), self._outcomes, self._wrong)


__all__ = [
    "Decision",
    "LearnedStats",
    "LearnedThresholds",
    "Outcome",
    "Rule",
    "lower_bound",
    "poisson_upper",
    "upper_bound",
    "within",
]
