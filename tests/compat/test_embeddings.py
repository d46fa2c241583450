"""Issue 12, point 3: ``/v1/embeddings`` with the official ``openai`` SDK over a real socket.

``all-MiniLM-L6-v2`` is the bundled model (the same vectors the semantic tier uses);
``embed-up`` is a catalogue model on nearline's mock upstream, whose ``/v1/embeddings``
answers a vector drawn from each text's hash (``mock_anthropic.mock_vector``).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from nearline.config import hash_api_key
from nearline.embed import load_embedder
from nearline.testing import http
from nearline.testing.mock_anthropic import mock_vector

KEYS = {"alice": "sk-alice-key", "bob": "sk-bob-key"}
MODELS = {"m": {"provider": "up"}, "embed-up": {"provider": "up", "upstream_model": "emb-1"}}
BUNDLED = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def gateway(make_module_gateway: Any) -> Any:
    keys = [{"sha256": hash_api_key(key), "tenant": name} for name, key in KEYS.items()]
    return make_module_gateway(models=MODELS, auth={"keys": keys})


def _client(gateway: Any, tenant: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=KEYS[tenant], max_retries=0)


def _post(gateway: Any, body: dict[str, Any], tenant: str = "alice") -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEYS[tenant]}"}
    return http.post(f"{gateway.v1}/embeddings", json=body, headers=headers, timeout=60)


def test_bundled_model_string_and_batch(gateway: Any) -> None:
    texts = ["What is a cache?", "How do I bake bread?"]
    expected = load_embedder().encode(texts)
    client = _client(gateway)
    one = client.embeddings.create(model=BUNDLED, input=texts[0])  # the SDK asks for base64
    assert one.model == BUNDLED and len(one.data) == 1
    assert np.allclose(one.data[0].embedding, expected[0], atol=1e-5)
    assert one.usage.prompt_tokens == one.usage.total_tokens > 2
    both = client.embeddings.create(model=BUNDLED, input=texts, encoding_format="float")
    assert [d.index for d in both.data] == [0, 1]
    for row, vector in zip(both.data, expected, strict=True):
        assert len(row.embedding) == 384
        assert np.allclose(row.embedding, vector, atol=1e-5)
    raw = _post(gateway, {"model": BUNDLED, "input": texts, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, expected[1], atol=1e-5)


def test_exact_cache_per_input_and_per_tenant(gateway: Any) -> None:
    first = _post(gateway, {"model": BUNDLED, "input": ["alpha beta", "gamma delta"]})
    assert first.headers["x-nearline-source"] == "inference"
    mixed = _post(gateway, {"model": BUNDLED, "input": ["gamma delta", "epsilon"]})
    assert mixed.headers["x-nearline-cached-inputs"] == "1"
    again = _post(gateway, {"model": BUNDLED, "input": ["alpha beta", "gamma delta"]})
    assert again.headers["x-nearline-source"] == "exact"
    assert again.json()["data"] == first.json()["data"]
    assert again.json()["usage"] == first.json()["usage"]  # token counts are kept with them
    other = _post(gateway, {"model": BUNDLED, "input": ["alpha beta"]}, tenant="bob")
    assert other.headers["x-nearline-cached-inputs"] == "0"  # never across tenants


def test_upstream_embedding_model(gateway: Any) -> None:
    upstream = gateway.upstream.since()
    client = _client(gateway)
    answer = client.embeddings.create(model="embed-up", input=["one text", "another text"])
    assert np.allclose(answer.data[0].embedding, mock_vector("one text"), atol=1e-6)
    assert np.allclose(answer.data[1].embedding, mock_vector("another text"), atol=1e-6)
    assert answer.usage.prompt_tokens == 4  # the mock counts words
    assert upstream.requests() == 1
    client.embeddings.create(model="embed-up", input=["one text", "another text"])
    assert upstream.requests() == 1  # cached
    tokens = client.embeddings.create(model="embed-up", input=[[1, 2, 3]])  # passed through
    assert len(tokens.data) == 1


def test_refusals(gateway: Any) -> None:
    client = _client(gateway)
    with pytest.raises(openai.NotFoundError, match=BUNDLED):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model=BUNDLED, input=[1, 2, 3])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=BUNDLED, input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=BUNDLED, input="")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.v1, api_key="wrong", max_retries=0).embeddings.create(
            model=BUNDLED, input="x"
        )
