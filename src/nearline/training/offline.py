"""``nearline train-router`` end to end: data -> embeddings -> model -> file, and its report.

The evaluation compares, on the held-out test split of each benchmark, the learned router with
RouteLLM's two reference points: a random router (APGR about 0.5; the mean over seeds) and one
that sends the longest prompts to the strong model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearline.embed import Embedder, Vectors
from nearline.gateway.routing.learned import LearnedRouter, RouterFile
from nearline.training.dataset import (
    BENCHMARKS,
    STRONG_MODEL,
    WEAK_MODEL,
    RoutingExample,
    load_examples,
    split,
)
from nearline.training.embedding_cache import cached_embeddings, prompts_key
from nearline.training.evaluation import Flags, RouterResult, Scores, evaluate
from nearline.training.training import train

RANDOM_SEEDS = 20
LEARNED = "learned (embedding, 2 x logistic)"
OPERATING_POINTS = ("recover_50_percent", "recover_80_percent")


@dataclass(frozen=True, slots=True)
class ReportRow:
    benchmark: str
    router: str
    questions: int
    result: RouterResult


@dataclass(frozen=True, slots=True)
class TrainedRouter:
    spec: RouterFile
    report: list[ReportRow]


def build_router(data_dir: Path, embedder: Embedder, cache_dir: Path) -> TrainedRouter:
    examples = load_examples(data_dir)
    embeddings = cached_embeddings(embedder, [example.prompt for example in examples], cache_dir)
    in_train = np.array([example.split == "train" for example in examples])
    train_examples, test_examples = split(examples)
    result = train(train_examples, embeddings[in_train])
    model = result.model
    spec = RouterFile(
        embedding_model=embedder.name,
        strong_weights=tuple(float(w) for w in model.strong.weights),
        strong_bias=model.strong.bias,
        weak_weights=tuple(float(w) for w in model.weak.weights),
        weak_bias=model.weak.bias,
        calibration=(float(result.calibration.weights[0]), result.calibration.bias),
        l2=result.l2,
        thresholds=_operating_points(train_examples, result.out_of_fold),
        score_quantiles=tuple(
            float(q) for q in np.quantile(result.out_of_fold, np.linspace(0, 1, 101))
        ),
        training={
            "data": "RouteLLM MMLU + GSM8K evaluations, contaminated prompts dropped",
            "train_examples": len(train_examples),
            "train_prompts_key": prompts_key(embedder.name, [e.prompt for e in train_examples]),
            "cv_apgr_mmlu_by_l2": {
                f"{l2:g}": round(apgr, 4) for l2, apgr in result.cv_apgr.items()
            },
            "strong_model": STRONG_MODEL,
            "weak_model": WEAK_MODEL,
        },
    )
    router = LearnedRouter(spec)
    report = evaluation_report(test_examples, embeddings[~in_train], router)
    return TrainedRouter(spec, report)


def evaluation_report(
    examples: Sequence[RoutingExample], embeddings: Vectors, router: LearnedRouter
) -> list[ReportRow]:
    learned = router.strong_probabilities(embeddings)
    lengths = np.array([len(example.prompt) for example in examples], dtype=np.float64)
    rows: list[ReportRow] = []
    for benchmark in BENCHMARKS:
        mask = np.array([example.benchmark == benchmark for example in examples])
        if not mask.any():
            continue
        strong = np.array([e.strong_correct for e in examples])[mask]
        weak = np.array([e.weak_correct for e in examples])[mask]
        questions = int(mask.sum())
        rows.append(_random_row(benchmark, strong, weak))
        rows.append(
            ReportRow(benchmark, "prompt length", questions, evaluate(lengths[mask], strong, weak))
        )
        rows.append(ReportRow(benchmark, LEARNED, questions, evaluate(learned[mask], strong, weak)))
    return rows


def _random_row(benchmark: str, strong: Flags, weak: Flags) -> ReportRow:
    results = [
        evaluate(np.random.default_rng(seed).random(len(strong)), strong, weak)
        for seed in range(RANDOM_SEEDS)
    ]
    return ReportRow(
        benchmark,
        f"random (mean of {RANDOM_SEEDS} seeds)",
        len(strong),
        RouterResult(
            apgr=float(np.mean([r.apgr for r in results])),
            strong_share_for_50=_mean_or_none([r.strong_share_for_50 for r in results]),
            strong_share_for_80=_mean_or_none([r.strong_share_for_80 for r in results]),
            strong_accuracy=results[0].strong_accuracy,
            weak_accuracy=results[0].weak_accuracy,
        ),
    )


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if len(present) == len(values) else None


def _operating_points(examples: Sequence[RoutingExample], scores: Scores) -> dict[str, float]:
    strong = np.array([example.strong_correct for example in examples])
    weak = np.array([example.weak_correct for example in examples])
    result = evaluate(scores, strong, weak)
    shares = (result.strong_share_for_50, result.strong_share_for_80)
    return {
        name: float(np.quantile(scores, 1.0 - (share if share is not None else 1.0)))
        for name, share in zip(OPERATING_POINTS, shares, strict=True)
    }


def render_report(rows: Sequence[ReportRow]) -> str:
    header = (
        f"{'benchmark':<9}  {'router':<33}  {'test n':>6}  {'APGR':>6}  "
        f"{'strong calls for 50 %':>21}  {'for 80 %':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        r = row.result
        lines.append(
            f"{row.benchmark:<9}  {row.router:<33}  {row.questions:>6}  {r.apgr:>6.3f}  "
            f"{_share(r.strong_share_for_50):>21}  {_share(r.strong_share_for_80):>8}"
        )
    accuracy = {row.benchmark: row.result for row in rows}
    lines.append("")
    lines.extend(
        f"{name}: strong model {r.strong_accuracy:.1%} correct, weak {r.weak_accuracy:.1%} "
        f"(test split)"
        for name, r in accuracy.items()
    )
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "never" if value is None else f"{value:.1%}"
