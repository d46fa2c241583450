"""Issue 17, point 4: real ``nearline serve`` replicas sharing the real Redis (limits,
budget counters) and PostgreSQL (keys, spend ledger) on 127.0.0.1, in front of nearline's
mock upstream. Each module run gets its own PostgreSQL schema and Redis prefix."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from nearline.testing import eventually, http, serve_in_process
from nearline.testing.mock_upstream import MockBehaviour

from .conftest import ADMIN_AUTH, POSTGRES, REDIS_URL, admin_auth, chat, create_key, priced_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def config(tmp_path_factory, mock_upstreams) -> Iterator[Path]:
    """A config file for replicas sharing one schema and one Redis prefix (both removed)."""
    mock = mock_upstreams.shared(MockBehaviour(ttft_s=0, tokens_per_s=5000))
    schema = f"nl_replicas_{uuid.uuid4().hex[:12]}"
    prefix = f"nearline-test:{uuid.uuid4().hex[:12]}:"
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    path = tmp_path_factory.mktemp("replicas") / "nearline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"log_level": "warning"},
                "auth": admin_auth(
                    store={"postgres_dsn": f"{POSTGRES}?options=-csearch_path%3D{schema}"}
                ),
                "redis": {"url": REDIS_URL},
                "limits": {"redis_prefix": prefix},
                "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
                "request_log": {"enabled": False},
                "providers": {"up": {"base_url": mock.base_url}},
                "models": priced_models(),
            }
        )
    )
    yield path
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def replicas(config: Path) -> Iterator[tuple[str, str]]:
    with ExitStack() as exits:
        a, b = (exits.enter_context(serve_in_process(config)) for _ in range(2))
        yield a, b


def _seen_by(url: str, key: str, status: int, within_s: float) -> float:
    """Seconds until ``url`` answers ``key``'s chat with ``status`` (fails after ``within_s``)."""
    start = time.monotonic()
    while True:
        answer = http.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        elapsed = time.monotonic() - start
        if answer.status_code == status:
            return elapsed
        assert elapsed < within_s, f"{url} still answers {answer.status_code} after {elapsed} s"
        time.sleep(0.01)


def test_two_replicas_share_one_request_limit(replicas):
    a, b = replicas
    key = create_key(a, "shared", rpm=60)["key"]
    # b must know the key, not merely answer it: with no key yet stored, auth is off and any
    # bearer is served anonymously (no limits), so wait until b refuses a wrong key too.
    _seen_by(b, key, 200, 1.0)
    _seen_by(b, "sk-nl-not-a-key", 401, 1.0)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda i: chat((a, b)[i % 2], key, f"q{i}").status_code, range(120))
        )
    assert set(statuses) <= {200, 429}
    assert 59 <= statuses.count(200) <= 61, statuses.count(200)


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(replicas):
    a, b = replicas
    made = create_key(b, "revoked")
    key = made["key"]
    seen = _seen_by(a, key, 200, 1.0)  # a new key reaches the other replica within 1 s too
    revoked = http.post(f"{b}/admin/keys/{made['id']}/revoke", headers=ADMIN_AUTH)
    assert revoked.status_code == 200
    assert chat(b, key).status_code == 401  # at once where it was revoked
    refused_after = _seen_by(a, key, 401, 1.0)
    assert refused_after < 1.0
    print(f"new key seen after {seen:.3f} s, revocation after {refused_after:.3f} s")


def _shared_spend(config: Path, key_id: str) -> float:
    """The key's spend this period in the budget counters the replicas share in Redis."""
    prefix = yaml.safe_load(config.read_text())["limits"]["redis_prefix"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = client.scan_iter(f"{prefix}key:{key_id}:spend:*")
        return sum(float(client.get(k) or 0) for k in keys)  # type: ignore[arg-type]
    finally:
        client.close()


def test_a_budget_stops_spend_across_replicas(replicas, config):
    a, b = replicas
    made = create_key(a, "budget", budget_usd=30)  # $27 per answer
    key = made["key"]
    _seen_by(b, key, 200, 1.0)
    _seen_by(b, "sk-nl-not-a-key", 401, 1.0)  # b knows the key (see the test above)
    assert chat(a, key, "one two three").status_code == 200
    # each replica sends its answers' spend to Redis every limits.flush_interval_s
    eventually(lambda: _shared_spend(config, made["id"]) == pytest.approx(27.0), 5)
    assert chat(b, key, "four five six").status_code == 200  # $27 < $30
    eventually(lambda: _shared_spend(config, made["id"]) == pytest.approx(54.0), 5)
    for url in (a, b):
        refused = chat(url, key, "seven")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"

    def ledger() -> dict[str, Any]:  # each replica writes its ledger every second
        spend: dict[str, Any] = http.get(
            f"{a}/admin/spend", params={"key": made["id"]}, headers=ADMIN_AUTH
        ).json()
        return spend

    eventually(lambda: ledger()["requests"] == 2, 10)
    assert ledger()["spend_usd"] == pytest.approx(54.0)


def test_limits_and_spend_survive_a_restart(config):
    with serve_in_process(config) as url:
        made = create_key(url, "restart", rpm=2, budget_usd=100)
        key = made["key"]
        assert chat(url, key, "one").status_code == 200
        assert chat(url, key, "two").status_code == 200
        assert chat(url, key, "three").status_code == 429
    with serve_in_process(config) as url:  # a new process: keys, windows and spend remain
        refused = chat(url, key, "four")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        spend = http.get(f"{url}/admin/spend", params={"key": made["id"]}, headers=ADMIN_AUTH)
        assert spend.json()["spend_usd"] == pytest.approx(50.0)  # two answers of $25
