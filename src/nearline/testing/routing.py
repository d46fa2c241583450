"""Test doubles for the learned router: a keyword embedder and a tiny RouteLLM-shaped folder."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nearline.embed import Vectors
from nearline.training.dataset import STRONG_MODEL, WEAK_MODEL


class KeywordEmbedder:
    """Dimension 0 says whether the text contains "hard"; the rest is a hash of the text."""

    name = "all-MiniLM-L6-v2"
    dim = 8

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
            noise = np.random.default_rng(seed).normal(size=self.dim) * 0.3
            noise[0] = 1.0 if "hard" in text else -1.0
            rows.append(noise / np.linalg.norm(noise))
        return np.asarray(rows, dtype=np.float32)


def write_dataset(root: Path, questions: int = 240) -> Path:
    """Questions with "hard" are answered only by the strong model; the rest by both."""
    (root / "mmlu").mkdir(parents=True)
    rows = [
        (f"question {i} {'hard' if i % 4 == 0 else 'easy'}", True, i % 4 != 0)
        for i in range(questions)
    ]
    with (root / "mmlu" / "mmlu_toy.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL])
        writer.writerows([prompt, str(weak), str(strong)] for prompt, strong, weak in rows)
    with (root / "gsm8k_responses.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL, f"{WEAK_MODEL}_response"])
        writer.writerows(
            [f"sum {i} {'hard' if i % 3 == 0 else ''}", str(i % 3 != 0), "True", "..."]
            for i in range(questions // 2)
        )
    contaminated = {"train_prompt": "x", "eval_prompt": rows[1][0], "train_idx": 0, "eval_idx": 1}
    (root / "mmlu_contaminated_prompts.jsonl").write_text(json.dumps(contaminated) + "\n")
    (root / "gsm8k_contaminated_prompts.jsonl").write_text("")
    return root
