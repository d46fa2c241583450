"""Learned thresholds inside the gateway (issue 18): a served semantic hit is verified in
the background on a budgeted share (a second upstream call, its spend counted), an unserved
candidate is compared with the answer the model gave anyway, and both show in /metrics."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from nearline.config import hash_api_key
from nearline.testing import eventually
from nearline.testing.mock_upstream import MockBehaviour


@pytest.fixture
def gateway(make_gateway):
    def start(**semantic: Any) -> tuple[Any, str]:
        mock = make_gateway.mock(MockBehaviour(ttft_s=0))
        auth = {
            "keys": [{"sha256": hash_api_key("sk-a"), "tenant": f"a-{uuid.uuid4().hex}"}],
            "metrics_keys": [hash_api_key("sk-metrics")],
        }
        models = {"m": {"provider": "up"}, "smollm2-135m-instruct": {"provider": "local"}}
        [replica] = make_gateway.replicas(
            1, mock, auth=auth, models=models, cache={"semantic": semantic}
        )
        return mock, replica.url

    return start


def ask(url: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": "Bearer sk-a"},
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
    )


def metric(url: str, name: str, **labels: str) -> float:
    headers = {"Authorization": "Bearer sk-metrics"}
    text = httpx.get(f"{url}/metrics", timeout=10, headers=headers).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(found.group(2))
    return total


def test_a_served_hit_is_verified_in_the_background_and_its_spend_counted(gateway):
    mock, url = gateway(max_error_rate=0.05, verify_rate=1.0, verify_per_minute=0)
    ask(url, "How do I reset my password?")

    again = ask(url, "How can I reset my password?")

    assert again.headers["x-nearline-source"] == "semantic"
    eventually(lambda: mock.requests() == 2)  # the verification: the same request, re-asked
    eventually(lambda: metric(url, "nearline_semantic_outcomes_total", kind="paid") == 1)
    assert metric(url, "nearline_semantic_hits_total", rule="static") == 1
    assert metric(url, "nearline_semantic_verification_tokens_total", kind="completion") > 0
    assert metric(url, "nearline_semantic_agreement_rate") in (0.0, 1.0)


def test_an_unserved_candidate_is_free_evidence(gateway):
    mock, url = gateway(
        max_error_rate=0.05, verify_rate=1.0, hit_threshold=0.999, near_threshold=0.5
    )
    ask(url, "How do I reset my password?")

    near = ask(url, "How can I reset my password?")

    assert near.headers["x-nearline-source"] == "inference"
    eventually(lambda: metric(url, "nearline_semantic_outcomes_total", kind="free") == 1)
    assert mock.requests() == 2  # nothing re-asked: the model answered the request itself
    assert metric(url, "nearline_semantic_outcomes_total", kind="paid") == 0


def test_without_an_error_bound_nothing_is_verified(gateway):
    mock, url = gateway(verify_rate=1.0)
    ask(url, "How do I reset my password?")

    assert ask(url, "How can I reset my password?").headers["x-nearline-source"] == "semantic"

    assert mock.requests() == 1
    assert metric(url, "nearline_semantic_hits_total", rule="static") == 1
    assert metric(url, "nearline_semantic_outcomes_total") == 0
