"""RouteLLM's released evaluations: per-question correctness of a strong and a weak model.

The folder holds ``mmlu/mmlu_<subject>.csv`` and ``gsm8k_responses.csv`` (columns ``prompt``,
then one boolean column per model) and ``<benchmark>_contaminated_prompts.jsonl`` (prompts that
also appear in RouteLLM's training data; their ``eval_prompt`` is dropped here). Each question
is put in the training or the test split by a hash of its text, so the split never depends on
file order.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
TEST_SHARE = 0.25

Benchmark = Literal["mmlu", "gsm8k"]
BENCHMARKS: tuple[Benchmark, ...] = ("mmlu", "gsm8k")


class RoutingDataError(Exception):
    """The evaluation files are missing or not in the expected shape."""


@dataclass(frozen=True, slots=True)
class RoutingExample:
    prompt: str
    benchmark: Benchmark
    subject: str
    strong_correct: bool
    weak_correct: bool

    @property
    def strong_needed(self) -> bool:
        """Only the strong model gets it right: routing it to the strong tier gains quality."""
        return self.strong_correct and not self.weak_correct

    @property
    def split(self) -> Literal["train", "test"]:
        digest = hashlib.sha256(self.prompt.encode("utf-8")).digest()
        return "test" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE else "train"


def load_examples(
    data_dir: Path, benchmarks: Iterable[Benchmark] = BENCHMARKS
) -> list[RoutingExample]:
    """Every decontaminated question of the given benchmarks, in file order."""
    examples: list[RoutingExample] = []
    for benchmark in benchmarks:
        files = _files(data_dir, benchmark)
        contaminated = _contaminated(data_dir / f"{benchmark}_contaminated_prompts.jsonl")
        for path in files:
            subject = path.stem.removeprefix("mmlu_") if benchmark == "mmlu" else "gsm8k"
            examples.extend(
                example
                for example in _read(path, benchmark, subject)
                if example.prompt not in contaminated
            )
    return examples


def split(
    examples: Sequence[RoutingExample],
) -> tuple[list[RoutingExample], list[RoutingExample]]:
    train = [example for example in examples if example.split == "train"]
    test = [example for example in examples if example.split == "test"]
    return train, test


def _files(data_dir: Path, benchmark: Benchmark) -> list[Path]:
    files = (
        sorted((data_dir / "mmlu").glob("mmlu_*.csv"))
        if benchmark == "mmlu"
        else [data_dir / "gsm8k_responses.csv"]
    )
    if not files or not all(path.is_file() for path in files):
        raise RoutingDataError(f"no {benchmark} responses under {data_dir}")
    return files


def _contaminated(path: Path) -> frozenset[str]:
    try:
        with path.open(encoding="utf-8") as lines:
            return frozenset(json.loads(line)["eval_prompt"] for line in lines if line.strip())
    except (OSError, ValueError, KeyError) as exc:
        raise RoutingDataError(f"{path}: cannot read the contaminated prompts: {exc}") from exc


def _read(path: Path, benchmark: Benchmark, subject: str) -> Iterable[RoutingExample]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        missing = {"prompt", STRONG_MODEL, WEAK_MODEL} - set(reader.fieldnames or ())
        if missing:
            raise RoutingDataError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            yield RoutingExample(
                prompt=row["prompt"],
                benchmark=benchmark,
                subject=subject,
                strong_correct=_flag(row[STRONG_MODEL], path),
                weak_correct=_flag(row[WEAK_MODEL], path),
            )


def _flag(value: str, path: Path) -> bool:
    if value not in ("True", "False"):
        raise RoutingDataError(f"{path}: expected True or False, got {value!r}")
    return value == "True"
