"""The shipped learned router on the held-out test split, next to the random and length baselines.

    .venv/bin/python benchmarks/router_eval.py [--data ../shared/data/routing]

APGR and strong-call shares as RouteLLM defines them (see ``nearline.training.evaluation``).
Prompt embeddings come from the cache ``nearline train-router`` fills (``build/routing``), or
are computed once (about ten minutes on two cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from nearline.embed import load_embedder
from nearline.gateway.routing.learned import DEFAULT_ROUTER_PATH, LearnedRouter
from nearline.training.dataset import load_examples
from nearline.training.embedding_cache import DEFAULT_CACHE_DIR, cached_embeddings
from nearline.training.offline import evaluation_report, render_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/routing"))
    parser.add_argument("--router", type=Path, default=DEFAULT_ROUTER_PATH)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args()

    started = time.perf_counter()
    examples = load_examples(args.data)
    embeddings = cached_embeddings(
        load_embedder(num_threads=2), [example.prompt for example in examples], args.cache_dir
    )
    in_test = np.array([example.split == "test" for example in examples])
    test = [example for example in examples if example.split == "test"]
    router = LearnedRouter.load(args.router)
    rows = evaluation_report(test, embeddings[in_test], router)
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, router {args.router.name} (l2={router.spec.l2:g})"
    )
    print(render_report(rows), end="")
    print(f"# {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
