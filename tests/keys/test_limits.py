"""Issue 17, points 2 and 3 in one gateway: rate limits per key and per tenant (requests and
streamed tokens per minute), OpenAI's headers and 429s, cache hits counted or not; budgets
from catalogue prices (429 ``insufficient_quota``), /admin/spend and /metrics. Both counter
backends: in memory (the embedded default) and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from nearline.config import KeyLimits, LimitsSettings
from nearline.gateway.limits import Governor, MemoryCounters, RedisCounters
from nearline.gateway.limits.window import Subject, format_reset
from nearline.gateway.tenancy import Tenant
from nearline.testing import http

from .conftest import (
    ADMIN_AUTH,
    REDIS_URL,
    admin_auth,
    chat,
    counted,
    create_key,
    priced_models,
)

NO_CACHES = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
EXACT_ONLY = {"semantic": {"enabled": False}}


@pytest.fixture(params=["memory", "redis"])
def backend(request, redis_prefix) -> dict:
    """Settings for either counter backend (Redis under this test's own prefix)."""
    if request.param == "memory":
        return {}
    return {"redis": {"url": REDIS_URL}, "limits": {"redis_prefix": redis_prefix}}


def _with(settings: dict, **limits) -> dict:
    merged = {**settings}
    merged["limits"] = {**settings.get("limits", {}), **limits}
    return merged


def test_requests_per_minute_refused_with_openai_headers(make_gateway, backend):
    gateway = make_gateway(auth=admin_auth(), cache=NO_CACHES, **backend)
    key = create_key(gateway.url, "acme", rpm=3)["key"]
    answers = [chat(gateway.url, key, f"q{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = chat(gateway.url, key, "q3")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-request-id"]
    streamed = http.post(
        f"{gateway.v1}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "s"}], "stream": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert streamed.status_code == 429  # a stream is refused before it starts, as JSON
    assert gateway.upstream.requests() == 3


def test_tokens_per_minute_count_as_they_stream(make_gateway, backend):
    gateway = make_gateway(auth=admin_auth(), cache=NO_CACHES, **backend)
    key = create_key(gateway.url, "acme", tpm=40)["key"]
    first = chat(gateway.url, key, "one two three", stream=True)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "40"
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"  # nothing counted before
    counted(gateway)
    second = chat(gateway.url, key, "four")
    assert second.status_code == 200  # 24 + 3 tokens used: room left
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 40 - 27
    counted(gateway)
    refused = chat(gateway.url, key, "five")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_tenant_limits_span_every_key_of_the_tenant(make_gateway, backend):
    settings = _with(backend, tenants={"acme": {"rpm": 2}})
    gateway = make_gateway(auth=admin_auth(), cache=NO_CACHES, **settings)
    one, two = create_key(gateway.url, "acme")["key"], create_key(gateway.url, "acme")["key"]
    other = create_key(gateway.url, "other")["key"]
    assert chat(gateway.url, one, "a").status_code == 200
    assert chat(gateway.url, two, "b").status_code == 200
    assert chat(gateway.url, one, "c").status_code == 429
    assert chat(gateway.url, two, "d").status_code == 429
    assert chat(gateway.url, other, "e").status_code == 200  # another tenant: not limited
    assert "x-ratelimit-limit-requests" not in chat(gateway.url, other, "f").headers


@pytest.mark.parametrize("count_hits", [True, False])
def test_whether_cache_hits_count_is_configurable(make_gateway, count_hits):
    gateway = make_gateway(
        auth=admin_auth(), cache=EXACT_ONLY, limits={"count_cache_hits": count_hits}
    )
    key = create_key(gateway.url, "acme", rpm=2)["key"]
    assert chat(gateway.url, key, "same").headers["x-nearline-source"] == "inference"
    gateway.settle()
    hits = [chat(gateway.url, key, "same") for _ in range(3)]
    statuses = [h.status_code for h in hits]
    assert statuses == ([200, 429, 429] if count_hits else [200, 200, 200])
    assert hits[0].headers["x-nearline-source"] == "exact"


def test_a_budget_stops_spend_and_spend_is_reported(make_gateway, backend):
    gateway = make_gateway(
        auth=admin_auth(public_metrics=True), cache=EXACT_ONLY, models=priced_models(), **backend
    )
    # $1 per token: one answer (24 + 3 tokens) costs $27, over the $30 budget after two.
    made = create_key(gateway.url, "acme", budget_usd=30, budget_period="day")
    key, tag = made["key"], uuid.uuid4().hex  # Redis' exact tier outlives the test: new words
    assert chat(gateway.url, key, f"one {tag} three").status_code == 200
    counted(gateway)
    assert chat(gateway.url, key, f"one {tag} three").headers["x-nearline-source"] == "exact"
    assert chat(gateway.url, key, f"four {tag} six").status_code == 200  # $27 < $30: admitted
    counted(gateway)
    refused = chat(gateway.url, key, f"seven {tag}")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert error["type"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"
    assert gateway.upstream.requests() == 2

    spend = http.get(
        f"{gateway.url}/admin/spend", params={"tenant": "acme"}, headers=ADMIN_AUTH
    ).json()
    assert spend["spend_usd"] == pytest.approx(54.0)
    assert spend["saved_usd"] == pytest.approx(27.0)  # the exact hit
    assert spend["requests"] == 3
    assert [row["key"] for row in spend["by"]] == [made["id"]]
    by_key = http.get(
        f"{gateway.url}/admin/spend", params={"key": "key-none"}, headers=ADMIN_AUTH
    ).json()
    assert by_key["requests"] == 0
    assert gateway.metric("nearline_spend_usd_total", model="m") == pytest.approx(54.0)
    assert gateway.metric("nearline_money_saved_usd_total", tier="exact") == pytest.approx(27.0)


def test_spend_since_and_filters(make_gateway):
    gateway = make_gateway(auth=admin_auth(), cache=NO_CACHES, models=priced_models())
    key = create_key(gateway.url, "acme")["key"]
    assert chat(gateway.url, key, "x").status_code == 200
    url = f"{gateway.url}/admin/spend"
    future = http.get(url, params={"since": "2999-01-01"}, headers=ADMIN_AUTH).json()
    assert future["requests"] == 0
    past = http.get(url, params={"since": "2020-01-01T00:00:00Z", "model": "m"}, headers=ADMIN_AUTH)
    assert past.json()["requests"] == 1
    assert http.get(url, params={"since": "soon"}, headers=ADMIN_AUTH).status_code == 400


def test_budget_spend_survives_a_restart_in_the_embedded_default(make_gateway, tmp_path):
    store = {"store": {"sqlite_path": str(tmp_path / "keys.sqlite")}}
    settings = {"auth": admin_auth(**store), "cache": NO_CACHES, "models": priced_models()}
    first = make_gateway(**settings)
    key = create_key(first.url, "acme", budget_usd=20)["key"]
    assert chat(first.url, key, "one").status_code == 200  # $25 spent
    first.stop()  # the ledger is written at shutdown
    second = make_gateway(**settings)
    refused = chat(second.url, key, "two")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"


def test_openai_duration_spelling():
    assert [format_reset(ms) for ms in (20, 1000, 1500, 59_000, 360_000)] == [
        "20ms",
        "1s",
        "1.5s",
        "59s",
        "6m0s",
    ]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_limits_never_block_the_event_loop(kind, redis_prefix):
    """Redis admissions wait on the socket without holding the loop (a 1 ms ticker keeps
    running between them; a blocking client would starve it); memory admissions never wait
    and are short (CPU per admission). Timing-free, so a loaded machine cannot fail it."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL) if kind == "redis" else None
    counters = (
        RedisCounters(client, prefix=redis_prefix) if client is not None else MemoryCounters()
    )
    await counters.start()
    governor = Governor(counters, LimitsSettings())
    limits = KeyLimits(rpm=100_000, tpm=1_000_000, budget_usd=9)
    tenant = Tenant("t", key_id="k", limits=limits)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    cpu = time.thread_time()  # this thread's: the loop's, not other tests' server threads
    try:
        for _ in range(300):
            await governor.admit(tenant)
            counters.add_tokens([Subject("key", "k", limits)], 10)
        cpu = time.thread_time() - cpu
        ran = ticks
    finally:
        ticker.cancel()
        await counters.aclose()
        if client is not None:
            await client.aclose()
    if kind == "redis":
        assert ran >= 300, f"the loop ran other work only {ran} times in 300 admissions"
    assert cpu / 300 < 0.002, f"{cpu / 300 * 1000:.2f} ms CPU per admission"
