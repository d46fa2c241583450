"""The exact cache tier, end to end over real HTTP.

Every test here uses nearline's mock upstream (a real HTTP server standing in for a paid
provider) and reads its request counter to see whether the upstream was asked. Tests with
the default settings share one gateway (each starts with its caches purged and counts the
upstream's requests from its own start); the many-replica test uses the real Redis on
127.0.0.1:6379.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from nearline.config import hash_api_key
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour

KEYS = {"sk-a": "tenant-a", "sk-b": "tenant-b"}
ADMIN = "sk-admin"
SETTINGS: dict[str, Any] = {
    "auth": {
        "keys": [{"sha256": hash_api_key(k), "tenant": t} for k, t in KEYS.items()],
        "admin_keys": [hash_api_key(ADMIN)],
    },
    "models": {
        "m": {"provider": "up", "upstream_model": "mock-1"},
        "m2": {"provider": "up", "upstream_model": "mock-1"},
        "careful": {"provider": "up", "cache": "deterministic"},
    },
}


@pytest.fixture(scope="module")
def shared(make_module_gateway):
    """The gateway with this module's default settings, shared by its tests."""
    return make_module_gateway(**SETTINGS)


@pytest.fixture
def gateway(shared):
    """The shared gateway, its caches empty, counting upstream requests from now."""
    shared.settle()  # nothing of the previous test still running
    purge(shared.url, {})
    shared.upstream = shared.upstream.since()
    return shared


def purge(url: str, body: dict[str, str]) -> httpx.Response:
    return http.post(
        f"{url}/admin/cache/purge",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    )


def ask(
    url: str,
    content: str = "What is a cache?",
    key: str = "sk-a",
    stream: bool = False,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
        **fields,
    }
    return http.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def content_chunks(response: httpx.Response) -> list[str]:
    chunks = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    chunks.append(choice["delta"]["content"])
    return chunks


def test_a_repeat_is_served_from_the_exact_tier_without_asking_upstream(gateway):
    first = ask(gateway.url)
    second = ask(gateway.url)
    assert first.headers["x-nearline-source"] == "inference"
    assert second.headers["x-nearline-source"] == "exact"
    assert second.headers["x-nearline-similarity"] == "1.0000"
    assert second.json()["nearline"] == {
        "source": "exact",
        "similarity": 1.0,
        "preliminary": None,
    }
    a, b = first.json(), second.json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == b["usage"]["prompt_tokens"]
    assert gateway.upstream.requests() == 1


def test_a_streamed_hit_replays_the_original_chunking_and_ignores_the_stream_flag(gateway):
    url = gateway.url
    original = ask(url, stream=True, stream_options={"include_usage": True})
    replayed = ask(url, stream=True)
    as_json = ask(url, stream=False)
    assert replayed.headers["x-nearline-source"] == "exact"
    assert content_chunks(replayed) == content_chunks(original)
    assert len(content_chunks(original)) > 3
    assert as_json.json()["choices"][0]["message"]["content"] == "".join(content_chunks(original))
    assert replayed.text.rstrip().endswith("data: [DONE]")
    assert gateway.upstream.requests() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"key": "sk-b"},  # another tenant
        {"model": "m2"},  # another model, same upstream
        {"temperature": 0.1},  # another sampling setting
        {"seed": 5},
        {"max_tokens": 7},
        {"system": "You are a pirate."},  # another system prompt
    ],
)
def test_answers_never_cross_tenants_models_prompts_or_sampling(gateway, change):
    url = gateway.url
    ask(url)
    key = change.pop("key", "sk-a")
    system = change.pop("system", None)
    fields = dict(change)
    if system is not None:
        fields["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is a cache?"},
        ]
    body_model = fields.pop("model", "m")
    response = http.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": body_model,
            "messages": [{"role": "user", "content": "What is a cache?"}],
            **fields,
        },
    )
    assert response.status_code == 200
    assert response.headers["x-nearline-source"] == "inference"
    assert gateway.upstream.requests() == 2


def test_cache_control_no_cache_revalidates_and_no_store_leaves_nothing(gateway):
    url = gateway.url
    ask(url, headers={"Cache-Control": "no-store"})
    assert ask(url).headers["x-nearline-source"] == "inference"  # nothing was stored
    assert ask(url).headers["x-nearline-source"] == "exact"
    assert (
        ask(url, headers={"Cache-Control": "no-cache"}).headers["x-nearline-source"] == "inference"
    )
    assert ask(url, nearline={"cache": "no-cache"}).headers["x-nearline-source"] == "inference"
    assert gateway.upstream.requests() == 4


def test_the_deterministic_policy_caches_only_fixed_seed_or_zero_temperature(gateway):
    for _ in range(2):
        assert ask(gateway.url, "hi", model="careful", temperature=0.9).status_code == 200
    assert gateway.upstream.requests() == 2
    for _ in range(2):
        assert ask(gateway.url, "hi", model="careful", temperature=0.9, seed=1).status_code == 200
    assert gateway.upstream.requests() == 3


def test_errored_streams_are_never_stored(make_gateway):
    gateway = make_gateway(MockBehaviour(ttft_s=0.01, disconnect_rate=1.0), **SETTINGS)
    for _ in range(2):
        response = ask(gateway.url, stream=True)
        assert '"error"' in response.text
    assert gateway.upstream.requests() == 2


def test_a_stream_the_client_abandoned_is_never_stored(make_gateway):
    # 60 words at 20 a second: the answer would be complete after 3 s, long after the
    # client has gone; the gateway must close the upstream call, not finish it for the cache.
    behaviour = MockBehaviour(ttft_s=0.01, tokens_per_s=20, completion_tokens=60)
    gateway = make_gateway(behaviour, **SETTINGS)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "q"}]}
    with http.stream(
        "POST",
        f"{gateway.v1}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": "Bearer sk-a"},
    ) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # Wait until the gateway has certainly finished with the abandoned request: the upstream
    # call has ended, no request is in flight and no background work is left.
    stats = gateway.upstream.wait_idle()
    gateway.settle()
    assert stats["cancelled"] == 1 and stats["completed"] == 0  # no complete answer existed
    assert gateway.state.pipeline.exact_cache is not None
    again = ask(gateway.url, "q", headers={"Cache-Control": "only-if-cached"})
    assert again.status_code == 504, again.text  # nothing stored, in any tier
    assert gateway.upstream.requests() == 1


def test_stale_entries_are_served_at_once_and_refreshed_once_in_the_background(make_gateway):
    # a TTL that a loaded machine cannot run out between the refresh and the last ask
    cache = {"exact": {"ttl_s": 1.0, "stale_while_revalidate_s": 30}}
    gateway = make_gateway(**SETTINGS, cache=cache)
    ask(gateway.url)
    time.sleep(1.1)  # the behaviour under test: the entry's TTL runs out
    stale = [ask(gateway.url) for _ in range(3)]
    assert all(r.headers["x-nearline-source"] == "exact" for r in stale)
    gateway.settle()  # every refresh the three hits started has finished
    assert gateway.upstream.requests() == 2  # one refresh, not three
    assert ask(gateway.url).headers["x-nearline-source"] == "exact"
    assert gateway.upstream.requests() == 2  # the refreshed entry is fresh again


def test_admin_purge_by_tenant_and_by_model(gateway):
    url = gateway.url
    ask(url, key="sk-a")
    ask(url, key="sk-b")
    denied = http.post(
        f"{url}/admin/cache/purge",
        json={"tenant": "tenant-a"},
        headers={"Authorization": "Bearer sk-a"},
        timeout=5,
    )
    assert denied.status_code == 401
    purged = purge(url, {"tenant": "tenant-a"})
    assert purged.json()["purged"]["exact"] == 1
    assert ask(url, key="sk-a").headers["x-nearline-source"] == "inference"
    assert ask(url, key="sk-b").headers["x-nearline-source"] == "exact"
    assert purge(url, {"model": "m"}).json()["purged"]["exact"] == 2


def test_two_gateways_sharing_redis_serve_each_others_answers(make_gateway):
    question = f"What is {uuid.uuid4().hex}?"
    a, b = make_gateway.replicas(2, **SETTINGS, redis={"url": "redis://127.0.0.1:6379/0"})
    first = ask(a.url, question)
    from_b = ask(b.url, question)
    assert from_b.headers["x-nearline-source"] == "exact"
    assert from_b.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert a.upstream.requests() == 1
    purge(a.url, {"tenant": "tenant-a"})
    assert ask(b.url, question).headers["x-nearline-source"] == "inference"


def test_metrics_count_hits_tokens_and_money_saved(make_gateway):
    models = {"m": {"provider": "up", "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}}}
    gateway = make_gateway(models=models)
    first = gateway.chat("two words").json()
    gateway.chat("two words")
    text = gateway.metrics()
    usage = first["usage"]
    expected_usd = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6
    assert 'nearline_cache_hits_total{tier="exact"} 1.0' in text
    assert "nearline_cache_misses_total 1.0" in text
    completion_line = 'nearline_tokens_saved_total{kind="completion",tier="exact"}'
    assert f"{completion_line} {float(usage['completion_tokens'])}" in text
    money = next(
        line
        for line in text.splitlines()
        if line.startswith('nearline_money_saved_usd_total{tier="exact"}')
    )
    assert float(money.split()[-1]) == pytest.approx(expected_usd)
    assert 'nearline_requests_total{model="m",outcome="ok",source="exact"} 1.0' in text
    assert 'nearline_time_to_first_token_seconds_count{model="m",source="inference"} 1.0' in text
