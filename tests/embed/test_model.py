from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nearline.embed import Embedder, EmbedderLoadError, load_embedder
from nearline.embed.model import length_groups

# Computed by the fp32 model on PyTorch (load_embedder("torch"), the nearline[torch] extra), so
# the int8 default is checked against the real model on an install without PyTorch.
FP32_REFERENCE = json.loads((Path(__file__).parent / "minilm_fp32_reference.json").read_text())


def test_vectors_are_unit_length_float32_rows(embedder: Embedder) -> None:
    vectors = embedder.encode(["What is the capital of France?", "How do I bake bread?"])

    assert vectors.shape == (2, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_questions(embedder: Embedder) -> None:
    question, paraphrase, unrelated = embedder.encode(
        [
            "How can I access a private Instagram account?",
            "How do I gain access to a private Instagram account?",
            "What is the boiling point of water at sea level?",
        ]
    )

    assert float(question @ paraphrase) > 0.8
    assert float(question @ unrelated) < 0.3


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(embedder: Embedder) -> None:
    short = "Paris"
    alone = embedder.encode([short])[0]
    batched = embedder.encode([short, "a much longer sentence that forces padding " * 5])[0]

    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(embedder: Embedder) -> None:
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_the_int8_default_agrees_with_the_fp32_model(embedder: Embedder) -> None:
    fp32 = np.asarray(FP32_REFERENCE["vectors"], dtype=np.float32)

    agreement = np.sum(embedder.encode(FP32_REFERENCE["texts"]) * fp32, axis=1)

    assert embedder.name.endswith("onnx-int8")
    assert np.all(agreement > 0.99)


def test_the_torch_runtime_computes_the_fp32_reference() -> None:
    pytest.importorskip(
        "torch", reason="the torch runtime is the nearline[torch] extra, not in the dev install"
    )
    fp32 = load_embedder("torch").encode(FP32_REFERENCE["texts"])

    expected = np.asarray(FP32_REFERENCE["vectors"], dtype=np.float32)
    np.testing.assert_allclose(fp32, expected, atol=1e-4)


def test_the_torch_runtime_without_its_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as uninstalled

    with pytest.raises(EmbedderLoadError, match=r"pip install 'nearline\[torch\]'"):
        load_embedder("torch")


def test_rows_keep_the_order_of_texts_of_mixed_lengths(embedder: Embedder) -> None:
    """Texts are encoded in length-sorted groups; each row must still belong to its text."""
    texts = [
        "a long question about the history of the Roman empire and its roads " * 4,
        "Why?",
        "How do I bake sourdough bread at home?",
        "Paris",
    ]
    together = embedder.encode(texts)
    alone = np.stack([embedder.encode([text])[0] for text in texts])

    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_length_groups_cover_every_text_once_within_the_token_budget() -> None:
    lengths = [12, 80, 9, 300, 14, 11, 40, 10]

    groups = length_groups(lengths, token_budget=48)

    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        padded = len(group) * max(lengths[i] for i in group)
        assert padded <= 48 or len(group) == 1
    assert [3] in groups  # a text over the budget goes alone
    assert any(len(group) >= 3 for group in groups)  # short texts share a call
