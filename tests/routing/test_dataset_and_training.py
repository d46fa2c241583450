"""Loading RouteLLM-shaped data, the embedding cache, and the logistic regression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nearline.testing.routing import KeywordEmbedder, write_dataset
from nearline.training.dataset import (
    STRONG_MODEL,
    WEAK_MODEL,
    RoutingDataError,
    load_examples,
    split,
)
from nearline.training.embedding_cache import cached_embeddings
from nearline.training.training import fit_logistic, train


def test_examples_are_read_and_contaminated_prompts_dropped(tmp_path: Path) -> None:
    examples = load_examples(write_dataset(tmp_path))
    mmlu = [e for e in examples if e.benchmark == "mmlu"]
    gsm8k = [e for e in examples if e.benchmark == "gsm8k"]
    assert len(mmlu) == 239  # 240 minus "question 1 easy"
    assert "question 1 easy" not in {e.prompt for e in mmlu}
    assert len(gsm8k) == 120
    assert mmlu[0].subject == "toy"
    hard = mmlu[0]  # "question 0 hard": strong right, weak wrong
    assert (hard.strong_correct, hard.weak_correct, hard.strong_needed) == (True, False, True)
    assert not mmlu[1].strong_needed


def test_the_split_depends_on_the_text_only(tmp_path: Path) -> None:
    examples = load_examples(write_dataset(tmp_path))
    train, test = split(examples)
    assert len(train) + len(test) == len(examples)
    assert 0.1 < len(test) / len(examples) < 0.4  # 25 % in expectation
    assert {e.split for e in split(list(reversed(examples)))[1]} == {"test"}
    assert [e.prompt for e in split(list(reversed(examples)))[1]] == [
        e.prompt for e in reversed(test)
    ]


def test_missing_columns_are_reported(tmp_path: Path) -> None:
    root = write_dataset(tmp_path)
    (root / "gsm8k_responses.csv").write_text(f"prompt,{WEAK_MODEL}\nq,True\n")
    with pytest.raises(RoutingDataError, match=STRONG_MODEL):
        load_examples(root)
    with pytest.raises(RoutingDataError, match="no mmlu"):
        load_examples(tmp_path / "nowhere")


def test_embeddings_are_cached_per_model_and_prompts(tmp_path: Path) -> None:
    embedder = KeywordEmbedder()
    first = cached_embeddings(embedder, ["a hard one", "easy"], tmp_path)
    again = cached_embeddings(embedder, ["a hard one", "easy"], tmp_path)
    assert embedder.calls == 1  # the second call read the file
    np.testing.assert_array_equal(first, again)
    cached_embeddings(embedder, ["easy", "a hard one"], tmp_path)  # other order, other key
    assert embedder.calls == 2
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2


def test_logistic_regression_reaches_the_optimum() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 5))
    labels = rng.random(400) < 1 / (1 + np.exp(-(2.0 * features[:, 0] - 1.0)))
    model = fit_logistic(features, labels, l2=1.0)
    # at the optimum the gradient of log-loss + 1/2 |w|^2 vanishes
    p = model.probabilities(features)
    gradient_w = features.T @ (p - labels) + model.weights
    gradient_b = float(np.sum(p - labels))
    assert np.max(np.abs(gradient_w)) < 1e-6
    assert abs(gradient_b) < 1e-6
    assert model.weights[0] > 1.0  # the informative feature dominates
    assert np.max(np.abs(model.weights[1:])) < 0.5


def test_training_learns_which_questions_need_the_strong_model(tmp_path: Path) -> None:
    examples = load_examples(write_dataset(tmp_path))
    embeddings = KeywordEmbedder().encode([e.prompt for e in examples])
    result = train(examples, embeddings, candidates=(0.1, 10.0))
    assert set(result.cv_apgr) == {0.1, 10.0}
    assert result.l2 in (0.1, 10.0)
    # a perfect router on MMLU here (25 % hard) recovers the gap at 25 % strong calls:
    # APGR = 0.25 x 0.5 + 0.75 x 1 = 0.875 at most
    assert max(result.cv_apgr.values()) > 0.85
    hard = np.array(["hard" in e.prompt for e in examples])
    gains = result.model.gain(embeddings)
    assert gains[hard].min() > gains[~hard].max()
    assert result.calibration.weights[0] > 0  # calibration keeps the order
    assert len(result.out_of_fold) == len(examples)
    assert 0.0 < result.out_of_fold.min() <= result.out_of_fold.max() < 1.0
