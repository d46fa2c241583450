"""The runtime router: its file format, probabilities, thresholds and the offline pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nearline.embed import load_embedder
from nearline.gateway.routing.learned import (
    DEFAULT_ROUTER_PATH,
    LearnedRouter,
    RouterFile,
    RouterFileError,
)
from nearline.testing.routing import KeywordEmbedder, write_dataset
from nearline.training.offline import LEARNED, build_router, render_report


def spec(**changes: object) -> RouterFile:
    fields: dict[str, object] = {
        "embedding_model": "all-MiniLM-L6-v2",
        "strong_weights": (2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        "strong_bias": 0.0,
        "weak_weights": (-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        "weak_bias": 0.0,
        "calibration": (4.0, -1.0),
        "l2": 1.0,
        "thresholds": {"recover_50_percent": 0.6, "recover_80_percent": 0.3},
        "score_quantiles": (0.0, 0.2, 1.0),
    }
    fields.update(changes)
    return RouterFile(**fields)  # type: ignore[arg-type]


def logistic(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_probability_is_the_calibrated_expected_gain() -> None:
    router = LearnedRouter(spec())
    # x0 = 0: both models 50 % right, gain 0 -> calibrated logistic(4 x 0 - 1) = 0.268941
    neutral = np.array([0, 0.5, 0.5, 0.5, 0.5, 0, 0, 0])
    assert router.strong_probability(neutral) == pytest.approx(logistic(-1))
    # x0 = 1: strong logistic(2) = 0.880797, weak logistic(-2) = 0.119203, gain 0.761594
    # -> logistic(4 x 0.761594 - 1) = logistic(2.046376) = 1 / (1 + 0.129211) = 0.885581
    one_hot = np.eye(8)[0]
    gain = logistic(2) - logistic(-2)
    assert router.expected_gains(one_hot[None, :])[0] == pytest.approx(gain)
    assert router.strong_probability(one_hot) == pytest.approx(logistic(4 * gain - 1))
    assert router.strong_probability(one_hot) == pytest.approx(0.885581, abs=1e-6)
    batch = router.strong_probabilities(np.stack([neutral, one_hot]))
    assert batch.shape == (2,)
    assert batch[1] > batch[0]
    with pytest.raises(ValueError, match="shape"):
        router.strong_probability(np.ones(3))


def test_text_is_embedded_with_the_injected_embedder() -> None:
    embedder = KeywordEmbedder()
    router = LearnedRouter(spec(), embedder)
    assert router.strong_probability("a hard question") > 0.5 > router.strong_probability("easy")
    assert router.needs_strong("a hard question")  # default: the 80 % point, 0.3
    assert not router.needs_strong("easy")
    assert not router.needs_strong("a hard question", threshold=0.99)
    assert embedder.calls == 5  # one encode per text query


def test_threshold_for_a_share_of_strong_calls() -> None:
    router = LearnedRouter(spec())
    # quantiles 0 %, 50 %, 100 % = 0.0, 0.2, 1.0: sending 50 % means the 50 % quantile
    assert router.threshold_for_strong_share(0.5) == pytest.approx(0.2)
    assert router.threshold_for_strong_share(0.25) == pytest.approx(0.6)  # halfway 0.2 -> 1.0
    assert router.threshold_for_strong_share(1.0) == 0.0
    with pytest.raises(ValueError, match="share"):
        router.threshold_for_strong_share(1.5)


def test_file_round_trip_and_errors(tmp_path: Path) -> None:
    original = spec(strong_bias=-1.23456789)
    path = tmp_path / "router.json"
    path.write_text(original.to_json())
    loaded = LearnedRouter.load(path)
    assert loaded.spec.strong_bias == -1.23457  # six significant digits
    assert loaded.spec.strong_weights == original.strong_weights
    assert loaded.spec.calibration == original.calibration
    assert loaded.spec.to_json() == path.read_text()  # stable bytes
    path.write_text('{"format": "something else"}')
    with pytest.raises(RouterFileError, match="not a nearline-learned-router/2"):
        LearnedRouter.load(path)
    with pytest.raises(RouterFileError):
        LearnedRouter.load(tmp_path / "missing.json")


def test_an_embedder_of_another_model_is_refused() -> None:
    other = KeywordEmbedder()
    other.name = "some-other-model"
    with pytest.raises(RouterFileError, match="trained on all-MiniLM-L6-v2"):
        LearnedRouter(spec(), other)


def test_the_shipped_router_loads_without_training_tools() -> None:
    router = LearnedRouter.load()
    assert router.spec.embedding_model.startswith("all-MiniLM-L6-v2")
    assert router.dim == 384
    # recovering 80 % of the gap takes more strong calls, so a lower threshold, than 50 %
    points = router.spec.thresholds
    assert points["recover_80_percent"] < points["recover_50_percent"]
    assert DEFAULT_ROUTER_PATH.stat().st_size < 64_000
    probability = router.strong_probability(np.full(384, 1 / math.sqrt(384)))
    assert 0.0 < probability < 1.0


def test_build_router_end_to_end_on_a_toy_data_set(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data")
    trained = build_router(data, KeywordEmbedder(), tmp_path / "cache")
    report = {(row.benchmark, row.router): row.result for row in trained.report}
    learned = report[("mmlu", LEARNED)]
    randomly = report[("mmlu", "random (mean of 20 seeds)")]
    assert learned.apgr > randomly.apgr + 0.2
    assert ("gsm8k", "prompt length") in report
    text = render_report(trained.report)
    assert "APGR" in text
    assert "strong model" in text
    again = build_router(data, KeywordEmbedder(), tmp_path / "cache")
    assert again.spec.to_json() == trained.spec.to_json()  # deterministic


def test_the_shipped_router_accepts_the_default_embedder() -> None:
    router = LearnedRouter.load(embedder=load_embedder())  # refuses a mismatched model
    probabilities = [
        router.strong_probability("What is the capital of France?"),
        router.strong_probability("Find the order of the factor group Z_6/<3>.\nA. 2\nB. 3"),
    ]
    assert all(0.0 < p < 1.0 for p in probabilities)
