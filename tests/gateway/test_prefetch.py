"""Prefetch learns which question follows which and answers the next one ahead of time.
Answers come from nearline's mock upstream (a real HTTP server standing in for a paid API)."""

from __future__ import annotations

from nearline.config import load_settings
from nearline.testing import eventually, http

FIRST = ["What is the capital of France?", "What's the capital city of France?"]
NEXT = ["What famous landmarks are in Paris?", "Which famous landmarks can I visit in Paris?"]


def test_a_learned_follow_up_is_answered_before_it_is_asked(make_gateway):
    gateway = make_gateway(prefetch={"enabled": True, "models": ["m"], "min_transitions": 2})
    for first, follow_up in zip(FIRST, NEXT, strict=True):  # learn: FIRST → NEXT twice
        gateway.chat(first)
        gateway.chat(follow_up)
    gateway.settle()  # every observation learnt; any prefetch it started has finished
    assert gateway.metric("nearline_prefetch_total") == 0  # everything was cached anyway
    http.post(f"{gateway.url}/admin/cache/purge", json={}, timeout=5)  # e.g. entries expired

    gateway.chat(FIRST[0])  # ... and the gateway now expects a question about Paris landmarks
    eventually(lambda: gateway.metric("nearline_prefetch_total") >= 1)
    gateway.settle()  # the prefetched answer has landed in the cache
    asked_upstream = gateway.upstream.requests()

    answered = gateway.chat(NEXT[0])
    assert answered.headers["x-nearline-source"] in ("exact", "semantic")
    assert gateway.upstream.requests() == asked_upstream
    assert gateway.metric("nearline_prefetch_total") == 1
    assert gateway.metric("nearline_prefetch_used_total") == 1


def test_prefetch_is_off_by_default():
    assert load_settings().prefetch.enabled is False
