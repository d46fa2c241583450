"""The online trace of semantic_online.py, replayed in process (for fast iteration).

The same trace, the same cluster answers and the tier's own code (``SemanticCache``,
``LearnedThresholds``, ``OnlineLearning``, the guard) — but no gateway: the serving steps
(exact tier first, a served semantic hit verified on a ``verify_rate`` sample, a miss sent
to the "model" and stored in both tiers, an unserved candidate compared with the fresh
answer) are done here in a loop, and the embeddings are computed once. Figures for the
docs come from semantic_online.py (a real ``nearline serve``); this is for trying ideas.

    .venv/bin/python benchmarks/semantic_online_sim.py [--requests 4000] [--seed 18]
        [--bounds 0.01,0.05] [--modes per-request] [--verify-rate 0.3] [--dump FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nearline.embed import load_embedder
from nearline.gateway.cache.semantic import SemanticCache, SemanticThresholds
from nearline.gateway.cache.thresholds import LearnedThresholds
from nearline.gateway.cache.verify import AnswerAgreement, OnlineLearning, VerificationBudget

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semantic_online import Asked, answer_of, build_trace, load_intents, trace_parser

PARTITION = "t|m|sim"


class Vectors:
    """A batcher stand-in: the trace's vectors, computed once."""

    def __init__(self, texts: list[str]) -> None:
        embedder = load_embedder()
        self.dim = embedder.dim
        unique = sorted(set(texts))
        self._of: dict[str, np.ndarray[Any, Any]] = {}
        for start in range(0, len(unique), 64):
            batch = unique[start : start + 64]
            for text, vector in zip(batch, embedder.encode(batch), strict=True):
                self._of[text] = vector

    async def embed(self, text: str) -> np.ndarray[Any, Any]:
        return self._of[text]


@dataclass
class SimRun:
    name: str
    sources: list[str] = field(default_factory=list)
    wrong: list[bool] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    verifications: int = 0
    learned_hits: int = 0


async def simulate(
    trace: list[Asked],
    vectors: Vectors,
    cluster_of: dict[str, int],
    learned: LearnedThresholds | None,
    verify_rate: float,
    near: float,
    seed: int,
    name: str,
    add_keys: bool = True,
    count_exact: bool = False,
) -> SimRun:
    run = SimRun(name)
    thresholds = SemanticThresholds(hit=0.9625, near=near if learned is not None else 0.90)
    cache = SemanticCache(vectors, thresholds=thresholds, learned=learned)  # type: ignore[arg-type]
    await cache.start()
    learning = OnlineLearning(
        cache,
        AnswerAgreement(vectors.embed),
        VerificationBudget(verify_rate, 0, rng=random.Random(seed)),
        add_keys=add_keys,
    )
    exact: dict[str, str] = {}
    for index, asked in enumerate(trace):
        truth = answer_of(cluster_of[asked.question])
        if asked.question in exact:
            if count_exact:  # a request answered, as a trial
                cache.count_request(PARTITION)
            run.sources.append("exact")
            run.wrong.append(exact[asked.question] != truth)
            continue
        match = await cache.lookup(PARTITION, asked.question)
        if match is not None:
            cached = match.payload.decode()
            run.candidates.append(
                {
                    "i": index,
                    "sim": round(match.similarity, 5),
                    "right": cached == truth,
                    "kind": asked.kind,
                    "band": match.band,
                    "rule": match.rule,
                    "entry": match.entry_id,
                }
            )
        if match is not None and match.band == "hit":
            run.sources.append("semantic")
            run.wrong.append(cached != truth)
            run.learned_hits += match.rule == "learned"
            if learned is not None and learning.should_verify(match):
                run.verifications += 1
                await learning.learn(match, asked.question, cached, truth, paid=True)
            continue
        run.sources.append("inference")
        run.wrong.append(False)
        if learned is not None and match is not None:
            await learning.learn(match, asked.question, cached, truth, paid=False)
        exact[asked.question] = truth
        await cache.store(PARTITION, asked.question, truth.encode(), 3600.0)
    await learning.aclose()
    await cache.aclose()
    return run


def summarise(runs: list[SimRun], n: int) -> None:
    print(
        "| config | sem hits | wrong/req | learned | verif | inference "
        "| Q1..Q4 hits (wrong) | 2nd half x |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for run in runs:
        hits = run.sources.count("semantic")
        wrong = sum(s == "semantic" and w for s, w in zip(run.sources, run.wrong, strict=True))
        quarters = []
        late = 0
        for q in range(4):
            span = range(q * n // 4, (q + 1) * n // 4)
            h = sum(run.sources[i] == "semantic" for i in span)
            w = sum(run.sources[i] == "semantic" and run.wrong[i] for i in span)
            late += h if q >= 2 else 0
            quarters.append(f"{h}({w})")
        base = late if base is None else base
        print(
            f"| {run.name} | {hits} | {wrong / n:.4f} | {run.learned_hits} | {run.verifications} "
            f"| {run.sources.count('inference')} | {' '.join(quarters)} "
            f"| {late / max(1, base):.2f} |"
        )


async def main_async(args: argparse.Namespace) -> None:
    intents = load_intents(args.data)
    trace = build_trace(intents, args.requests, args.seed)
    print(f"trace {len(trace)}: {Counter(a.kind for a in trace)}", file=sys.stderr)
    vectors = Vectors([a.question for a in trace])
    runs = [
        await simulate(trace, vectors, intents.cluster_of, None, 0.0, 0.90, args.seed, "static")
    ]
    for mode in [m for m in args.modes.split(",") if m]:
        for bound in [float(b) for b in args.bounds.split(",") if b]:
            learned = LearnedThresholds(
                bound,
                static_hit=0.9625,
                per_request=mode == "per-request",
                verify_rate=args.verify_rate,
            )
            runs.append(
                await simulate(
                    trace,
                    vectors,
                    intents.cluster_of,
                    learned,
                    args.verify_rate,
                    args.floor,
                    args.seed if args.verify_seed is None else args.verify_seed,
                    f"{mode} {bound:g}",
                    add_keys=not args.no_add_keys,
                    count_exact=args.count_exact,
                )
            )
    summarise(runs, len(trace))
    if args.dump:
        args.dump.write_text(
            json.dumps(
                {run.name: {"candidates": run.candidates, "sources": run.sources} for run in runs}
            )
        )


def main() -> None:
    parser = trace_parser(__doc__.split("\n\n")[0], "per-request")
    parser.add_argument("--verify-seed", type=int, help="verification sample's seed")
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--count-exact", action="store_true", help="exact hits as trials")
    parser.add_argument("--no-add-keys", action="store_true", help="verified paraphrases stay out")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
