"""The exact cache tier, end to end over real HTTP.

Every test here uses nearline's mock upstream (a real HTTP server standing in for a paid
provider) and reads its request counter to see whether the upstream was asked. The
many-replica test uses the real Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from nearline.app import create_app
from nearline.config import hash_api_key, load_settings
from nearline.testing import serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

KEYS = {"sk-a": "tenant-a", "sk-b": "tenant-b"}
ADMIN = "sk-admin"


@contextmanager
def stack(
    behaviour: MockBehaviour | None = None, replicas: int = 1, **settings: Any
) -> Iterator[tuple[str, list[str]]]:
    """A mock upstream and ``replicas`` gateways in front of it; yields (mock_url, gateways)."""
    with ExitStack() as exits:
        mock_url = exits.enter_context(
            serve_in_thread(create_mock_app(behaviour or MockBehaviour(ttft_s=0.01)))
        )
        config = load_settings(
            auth={
                "keys": [{"sha256": hash_api_key(k), "tenant": t} for k, t in KEYS.items()],
                "admin_keys": [hash_api_key(ADMIN)],
            },
            providers={"up": {"base_url": f"{mock_url}/v1"}},
            models={
                "m": {"provider": "up", "upstream_model": "mock-1"},
                "m2": {"provider": "up", "upstream_model": "mock-1"},
                "careful": {"provider": "up", "cache": "deterministic"},
            },
            **settings,
        )
        urls = [exits.enter_context(serve_in_thread(create_app(config))) for _ in range(replicas)]
        yield mock_url, urls


def upstream_requests(mock_url: str) -> int:
    return int(httpx.get(f"{mock_url}/mock/stats", timeout=5).json()["requests"])


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
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def content_chunks(response: httpx.Response) -> list[str]:
    import orjson

    chunks = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    chunks.append(choice["delta"]["content"])
    return chunks


def test_a_repeat_is_served_from_the_exact_tier_without_asking_upstream():
    with stack() as (mock_url, [url]):
        first = ask(url)
        second = ask(url)
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
        assert upstream_requests(mock_url) == 1


def test_a_streamed_hit_replays_the_original_chunking_and_ignores_the_stream_flag():
    with stack() as (mock_url, [url]):
        original = ask(url, stream=True, stream_options={"include_usage": True})
        replayed = ask(url, stream=True)
        as_json = ask(url, stream=False)
        assert replayed.headers["x-nearline-source"] == "exact"
        assert content_chunks(replayed) == content_chunks(original)
        assert len(content_chunks(original)) > 3
        assert as_json.json()["choices"][0]["message"]["content"] == "".join(
            content_chunks(original)
        )
        assert replayed.text.rstrip().endswith("data: [DONE]")
        assert upstream_requests(mock_url) == 1


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
def test_answers_never_cross_tenants_models_prompts_or_sampling(change):
    with stack() as (mock_url, [url]):
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
        response = httpx.post(
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
        assert upstream_requests(mock_url) == 2


def test_cache_control_no_cache_revalidates_and_no_store_leaves_nothing():
    with stack() as (mock_url, [url]):
        ask(url, headers={"Cache-Control": "no-store"})
        assert ask(url).headers["x-nearline-source"] == "inference"  # nothing was stored
        assert ask(url).headers["x-nearline-source"] == "exact"
        assert (
            ask(url, headers={"Cache-Control": "no-cache"}).headers["x-nearline-source"]
            == "inference"
        )
        assert ask(url, nearline={"cache": "no-cache"}).headers["x-nearline-source"] == "inference"
        assert upstream_requests(mock_url) == 4


def test_the_deterministic_policy_caches_only_fixed_seed_or_zero_temperature():
    with stack() as (mock_url, [url]):
        for _ in range(2):
            assert ask(url, "hi", model="careful", temperature=0.9).status_code == 200
        assert upstream_requests(mock_url) == 2
        for _ in range(2):
            assert ask(url, "hi", model="careful", temperature=0.9, seed=1).status_code == 200
        assert upstream_requests(mock_url) == 3


def test_errored_streams_are_never_stored():
    with stack(MockBehaviour(ttft_s=0.01, disconnect_rate=1.0)) as (mock_url, [url]):
        for _ in range(2):
            response = ask(url, stream=True)
            assert '"error"' in response.text
        assert upstream_requests(mock_url) == 2


def test_a_stream_the_client_abandoned_is_never_stored():
    behaviour = MockBehaviour(ttft_s=0.01, tokens_per_s=20, completion_tokens=60)
    with stack(behaviour) as (_mock_url, [url]):
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "q"}]}
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            timeout=30,
            headers={"Authorization": "Bearer sk-a"},
        ) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
        time.sleep(0.3)
        assert (
            httpx.post(
                f"{url}/v1/chat/completions",
                json={**body, "stream": False},
                timeout=30,
                headers={"Authorization": "Bearer sk-a"},
            ).headers["x-nearline-source"]
            == "inference"
        )


def test_stale_entries_are_served_at_once_and_refreshed_once_in_the_background():
    cache = {"exact": {"ttl_s": 0.3, "stale_while_revalidate_s": 30}}
    with stack(cache=cache) as (mock_url, [url]):
        ask(url)
        time.sleep(0.5)
        stale = [ask(url) for _ in range(3)]
        assert all(r.headers["x-nearline-source"] == "exact" for r in stale)
        deadline = time.monotonic() + 5
        while upstream_requests(mock_url) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert upstream_requests(mock_url) == 2  # one refresh, not three


def test_admin_purge_by_tenant_and_by_model():
    with stack() as (_mock_url, [url]):
        ask(url, key="sk-a")
        ask(url, key="sk-b")
        denied = httpx.post(
            f"{url}/admin/cache/purge",
            json={"tenant": "tenant-a"},
            headers={"Authorization": "Bearer sk-a"},
            timeout=5,
        )
        assert denied.status_code == 401
        purged = httpx.post(
            f"{url}/admin/cache/purge",
            json={"tenant": "tenant-a"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        )
        assert purged.json()["purged"]["exact"] == 1
        assert ask(url, key="sk-a").headers["x-nearline-source"] == "inference"
        assert ask(url, key="sk-b").headers["x-nearline-source"] == "exact"
        by_model = httpx.post(
            f"{url}/admin/cache/purge",
            json={"model": "m"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        )
        assert by_model.json()["purged"]["exact"] == 2


def test_two_gateways_sharing_redis_serve_each_others_answers():
    question = f"What is {uuid.uuid4().hex}?"
    with stack(replicas=2, redis={"url": "redis://127.0.0.1:6379/0"}) as (mock_url, [a, b]):
        first = ask(a, question)
        from_b = ask(b, question)
        assert from_b.headers["x-nearline-source"] == "exact"
        assert from_b.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
        assert upstream_requests(mock_url) == 1
        httpx.post(
            f"{a}/admin/cache/purge",
            json={"tenant": "tenant-a"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        )
        assert ask(b, question).headers["x-nearline-source"] == "inference"


def test_metrics_count_hits_tokens_and_money_saved():
    models = {"m": {"provider": "up", "price": {"input_per_mtok": 1000, "output_per_mtok": 2000}}}
    with serve_in_thread(create_mock_app(MockBehaviour(ttft_s=0.01))) as mock_url:
        settings = load_settings(providers={"up": {"base_url": f"{mock_url}/v1"}}, models=models)
        with serve_in_thread(create_app(settings)) as url:
            body = {"model": "m", "messages": [{"role": "user", "content": "two words"}]}
            first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
            text = httpx.get(f"{url}/metrics", timeout=5).text
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
