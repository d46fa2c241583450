"""How much does batching save the embedding model itself? One text per call vs batches.

The worker's embedding pipeline can only gain from batching what the model gains plus the
broker round trips it amortises. This measures the model alone, in one process, for the
worker benchmark's short texts and for Quora questions: milliseconds per text when each
text is its own call, and in batches of 16, 32 and 64 (encoded in length-sorted groups, as
``encode`` does), with one and two onnxruntime threads. Rounds alternate, medians printed.

    .venv/bin/python benchmarks/embedding_batching.py [--runtime onnx-int8|torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from nearline.embed import Embedder, load_embedder

sys.path.insert(0, str(Path(__file__).parent))
from worker_throughput import events_for
from workload import load_duplicate_pairs

BATCHES = (16, 32, 64)


def per_text_ms(embedder: Embedder, texts: list[str], batch: int) -> float:
    """Milliseconds per text when ``texts`` are encoded ``batch`` at a time."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embedder.encode(texts[start : start + batch])
    return (time.perf_counter() - started) / len(texts) * 1000


def row(name: str, threads: int, embedder: Embedder, texts: list[str], rounds: int) -> str:
    embedder.encode(texts[:64])  # warm-up
    samples: dict[int, list[float]] = {size: [] for size in (1, *BATCHES)}
    for _ in range(rounds):  # alternate the sizes so machine noise hits all alike
        for size, values in samples.items():
            values.append(per_text_ms(embedder, texts, size))
    medians = {size: statistics.median(values) for size, values in samples.items()}
    best = min(medians[size] for size in BATCHES)
    cells = " | ".join(f"{medians[size]:.2f}" for size in (1, *BATCHES))
    return f"| {name} | {threads} | {cells} | {medians[1] / best:.1f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnx-int8", choices=["onnx-int8", "torch"])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pairs, _ = load_duplicate_pairs()
    corpora = {
        "worker texts": [str(event["text"]) for event in events_for("embed", args.texts)],
        "Quora questions": [question for pair in pairs for question in pair][: args.texts],
    }
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
        f"{os.getloadavg()[0]:.2f} | {args.runtime} | {args.texts} texts | medians of "
        f"{args.rounds} rounds"
    )
    sizes = " | ".join(f"batch {size}" for size in BATCHES)
    print(f"| texts (ms per text) | threads | 1 per call | {sizes} | best ratio |")
    print("|---|---:|---:|" + "---:|" * len(BATCHES) + "---:|")
    for threads in (1, 2):
        embedder = load_embedder(args.runtime, num_threads=threads)
        for name, texts in corpora.items():
            print(row(name, threads, embedder, texts, args.rounds), flush=True)


if __name__ == "__main__":
    main()
