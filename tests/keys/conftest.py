"""Helpers of the key, limit and spend tests (issue 17): an admin key, the key API over
HTTP, and per-test Redis prefixes and PostgreSQL schemas (cleaned up afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from nearline.config import hash_api_key
from nearline.testing import http

ADMIN = "sk-admin-issue17"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://127.0.0.1:5432/test"
PRICED = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 1_000_000.0}  # $1 per token


def admin_auth(**extra: Any) -> dict[str, Any]:
    """``auth`` settings with the admin key, and ``extra``."""
    return {"admin_keys": [hash_api_key(ADMIN)], **extra}


def priced_models(price: dict[str, float] | None = None) -> dict[str, Any]:
    return {"m": {"provider": "up", "upstream_model": "mock-1", "price": price or PRICED}}


def create_key(url: str, tenant: str = "t", **fields: Any) -> dict[str, Any]:
    response = http.post(
        f"{url}/admin/keys", json={"tenant": tenant, **fields}, headers=ADMIN_AUTH, timeout=10
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def counted(gateway: Any) -> None:
    """Wait until the answers so far are counted: none in flight (an answer's tokens and spend
    are counted as it ends), then what the counters buffered sent to Redis now."""
    gateway.settle()
    governor = gateway.state.governor
    assert governor is not None
    gateway.call(governor.counters.flush())


def chat(url: str, key: str | None, content: str = "What is a cache?", **fields: Any):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return http.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], **fields},
        headers=headers,
        timeout=30,
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"nearline-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose search_path is a schema of this test's own, dropped afterwards."""
    schema = f"nl_keys_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")
