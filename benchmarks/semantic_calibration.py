"""Calibrate the semantic cache's similarity threshold and near-miss guard on QQP pairs.

Each labelled pair (question1, question2, is_duplicate) of ../shared/data/semantic/
qqp_pairs_dev.csv stands for "question2 is cached, question1 is asked". A pair is *served*
when cosine similarity >= threshold and (with the guard) the guard accepts it. Then:

* precision      = served duplicates / served pairs (1 - precision of hits are wrong answers)
* recall         = served duplicates / duplicates
* false-hit rate = served non-duplicates / non-duplicates (the chance that a different
  question this close to a cached one gets the cached answer)

The pairs are split once, by a hash of their text, into a tuning part (70 %) where the
threshold is chosen — the lowest threshold whose false-hit rate is <= the target, i.e. the
highest recall the target allows — and a held-out part (30 %) that reports the final figures.

    .venv/bin/python benchmarks/semantic_calibration.py [--target-fhr 0.01] [--cache F.npz]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nearline.embed import load_embedder
from nearline.gateway.cache.guard import GuardPolicy, NearMissGuard

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic" / "qqp_pairs_dev.csv"
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Pairs:
    first: list[str]
    second: list[str]
    duplicate: BoolArray
    held_out: BoolArray


@dataclass(frozen=True)
class Scores:
    threshold: float
    precision: float
    recall: float
    false_hit_rate: float
    served: int


def load_pairs(path: Path) -> Pairs:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = [row["question1"] for row in rows]
    second = [row["question2"] for row in rows]
    duplicate = np.array([row["is_duplicate"] == "1" for row in rows])
    held_out = np.array(
        [
            int(hashlib.sha256(f"{a}\x1f{b}".encode()).hexdigest()[:8], 16) % 10 >= 7
            for a, b in zip(first, second, strict=True)
        ]
    )
    return Pairs(first, second, duplicate, held_out)


def similarities(pairs: Pairs, cache: Path | None) -> npt.NDArray[np.float32]:
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if len(stored["similarity"]) == len(pairs.first):
                return np.asarray(stored["similarity"], dtype=np.float32)
    embedder = load_embedder()
    started = time.perf_counter()
    first = np.concatenate(
        [embedder.encode(pairs.first[i : i + 64]) for i in range(0, len(pairs.first), 64)]
    )
    second = np.concatenate(
        [embedder.encode(pairs.second[i : i + 64]) for i in range(0, len(pairs.second), 64)]
    )
    print(f"embedded {2 * len(pairs.first)} questions in {time.perf_counter() - started:.0f} s")
    similarity = np.sum(first * second, axis=1).astype(np.float32)
    if cache is not None:
        np.savez(cache, similarity=similarity)
    return similarity


def score(
    threshold: float, similarity: np.ndarray, accepted: BoolArray, duplicate: BoolArray
) -> Scores:
    served = (similarity >= threshold) & accepted
    true_hits = int(np.sum(served & duplicate))
    false_hits = int(np.sum(served & ~duplicate))
    return Scores(
        threshold=threshold,
        precision=true_hits / max(1, true_hits + false_hits),
        recall=true_hits / max(1, int(np.sum(duplicate))),
        false_hit_rate=false_hits / max(1, int(np.sum(~duplicate))),
        served=true_hits + false_hits,
    )


def operating_threshold(
    similarity: np.ndarray, accepted: BoolArray, duplicate: BoolArray, target_fhr: float
) -> float:
    """The lowest threshold (highest recall) whose false-hit rate is within the target."""
    for threshold in np.arange(0.60, 1.0001, 0.0025):
        if score(float(threshold), similarity, accepted, duplicate).false_hit_rate <= target_fhr:
            return round(float(threshold), 4)
    return 1.0


def row(label: str, scores: Scores) -> str:
    return (
        f"| {label} | {scores.threshold:.4f} | {scores.precision:.3f} | {scores.recall:.3f} "
        f"| {scores.false_hit_rate:.4f} | {scores.served} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--target-fhr", type=float, default=0.01)
    parser.add_argument("--near-fhr", type=float, default=0.05)
    parser.add_argument("--cache", type=Path, help="keep similarities in this .npz file")
    args = parser.parse_args()

    pairs = load_pairs(args.data)
    similarity = similarities(pairs, args.cache)
    guard = NearMissGuard()
    started = time.perf_counter()
    guarded = np.array(
        [guard.check(a, b).accepted for a, b in zip(pairs.first, pairs.second, strict=True)]
    )
    guard_us = (time.perf_counter() - started) / len(pairs.first) * 1e6
    unguarded = np.ones_like(guarded)
    tune, test = ~pairs.held_out, pairs.held_out
    dup = pairs.duplicate

    print(
        f"\npairs: {len(dup)} ({int(dup.sum())} duplicates); tuning {int(tune.sum())}, "
        f"held out {int(test.sum())}; guard {guard_us:.0f} µs per pair"
    )
    print(
        f"guard rejects {np.mean(~guarded[dup]):.1%} of duplicates, "
        f"{np.mean(~guarded[~dup]):.1%} of non-duplicates (all pairs, any similarity)"
    )

    hit_sim = operating_threshold(similarity[tune], unguarded[tune], dup[tune], args.target_fhr)
    hit = operating_threshold(similarity[tune], guarded[tune], dup[tune], args.target_fhr)
    near = operating_threshold(similarity[tune], guarded[tune], dup[tune], args.near_fhr)

    print(
        f"\nOperating points chosen on the tuning split (target false-hit rate "
        f"{args.target_fhr:.1%}; near band {args.near_fhr:.0%}), scored on the held-out split:\n"
    )
    print("| rule | threshold | precision | recall | false-hit rate | served |")
    print("|---|---|---|---|---|---|")
    print(row("similarity only", score(hit_sim, similarity[test], unguarded[test], dup[test])))
    print(row("similarity + guard (hit)", score(hit, similarity[test], guarded[test], dup[test])))
    same = score(hit_sim, similarity[test], guarded[test], dup[test])
    print(row("guard, same threshold as sim-only", same))
    print(row("similarity + guard (near)", score(near, similarity[test], guarded[test], dup[test])))

    print("\nHeld-out sweep (similarity + guard):\n")
    print("| threshold | precision | recall | false-hit rate | served |")
    print("|---|---|---|---|---|")
    for threshold in np.arange(0.80, 0.99, 0.02):
        scores = score(float(threshold), similarity[test], guarded[test], dup[test])
        print(
            f"| {scores.threshold:.2f} | {scores.precision:.3f} | {scores.recall:.3f} "
            f"| {scores.false_hit_rate:.4f} | {scores.served} |"
        )

    print(f"\nWhat each check does at the hit threshold {hit} (held-out, pairs above it):\n")
    print("| check | false hits removed | true hits lost |")
    print("|---|---|---|")
    above = test & (similarity >= hit)
    for check in GuardPolicy.__dataclass_fields__:
        only = GuardPolicy(**{name: name == check for name in GuardPolicy.__dataclass_fields__})
        single = NearMissGuard(only)
        rejected = np.array(
            [
                bool(above[i]) and not single.check(pairs.first[i], pairs.second[i]).accepted
                for i in range(len(dup))
            ]
        )
        print(f"| {check} | {int(np.sum(rejected & ~dup))} | {int(np.sum(rejected & dup))} |")
    print(f"\nSemanticThresholds(hit={hit}, near={near})")


if __name__ == "__main__":
    main()
