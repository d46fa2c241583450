"""Prefetch learns which question follows which and answers the next one ahead of time.
Answers come from nearline's mock upstream (a real HTTP server standing in for a paid API)."""

from __future__ import annotations

import time

import httpx

from nearline.app import create_app
from nearline.config import load_settings
from nearline.testing import serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

FIRST = ["What is the capital of France?", "What's the capital city of France?"]
NEXT = ["What famous landmarks are in Paris?", "Which famous landmarks can I visit in Paris?"]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_learned_follow_up_is_answered_before_it_is_asked():
    with serve_in_thread(create_mock_app(MockBehaviour(ttft_s=0.01))) as mock_url:
        settings = load_settings(
            providers={"up": {"base_url": f"{mock_url}/v1"}},
            models={"m": {"provider": "up"}},
            prefetch={"enabled": True, "models": ["m"], "min_transitions": 2},
        )
        with serve_in_thread(create_app(settings)) as url:

            def ask(question: str) -> httpx.Response:
                return httpx.post(
                    f"{url}/v1/chat/completions",
                    timeout=30,
                    json={"model": "m", "messages": [{"role": "user", "content": question}]},
                )

            for first, follow_up in zip(FIRST, NEXT, strict=True):  # learn: FIRST → NEXT twice
                ask(first)
                ask(follow_up)
            time.sleep(0.3)
            assert _metric(url, "nearline_prefetch_total") == 0  # everything was cached anyway
            httpx.post(f"{url}/admin/cache/purge", json={}, timeout=5)  # e.g. entries expired

            ask(FIRST[0])  # ... and the gateway now expects a question about Paris landmarks
            deadline = time.monotonic() + 10
            while _metric(url, "nearline_prefetch_total") < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # let the prefetched answer land in the cache
            asked_upstream = httpx.get(f"{mock_url}/mock/stats", timeout=5).json()["requests"]

            answered = ask(NEXT[0])
            assert answered.headers["x-nearline-source"] in ("exact", "semantic")
            assert (
                httpx.get(f"{mock_url}/mock/stats", timeout=5).json()["requests"] == asked_upstream
            )
            assert _metric(url, "nearline_prefetch_total") == 1
            assert _metric(url, "nearline_prefetch_used_total") == 1


def test_prefetch_is_off_by_default():
    assert load_settings().prefetch.enabled is False
