"""Issue 13, point 3: admin calls, ``/metrics`` and the dashboard's data need a key.

``POST /admin/cache/purge`` needs an admin key whenever ``auth.admin_keys`` are configured,
tenant keys are, or the bind is not loopback — not only when tenant keys exist.
``/metrics`` and ``/dashboard/data`` (model names, volumes, error codes, money saved) need a
metrics or admin key whenever auth is on; ``auth.public_metrics`` opens them on purpose.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nearline.config import hash_api_key
from nearline.testing import http

ADMIN, METRICS, TENANT = "sk-admin", "sk-metrics", "sk-tenant"


def purge(gateway: Any, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return http.post(f"{gateway.url}/admin/cache/purge", json={}, headers=headers, timeout=5)


def get(gateway: Any, path: str, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return http.get(f"{gateway.url}{path}", headers=headers, timeout=10)


def test_admin_keys_alone_protect_the_purge(make_gateway):
    gateway = make_gateway(auth={"admin_keys": [hash_api_key(ADMIN)]})  # no tenant keys
    assert gateway.chat().status_code == 200  # chat stays open on loopback (auth is off)
    refused = purge(gateway)
    assert refused.status_code == 401, refused.text
    assert purge(gateway, "sk-wrong").status_code == 401
    assert purge(gateway, ADMIN).status_code == 200


def test_a_public_bind_never_serves_an_anonymous_purge(make_gateway):
    gateway = make_gateway(
        server={"host": "0.0.0.0"}, auth={"allow_anonymous_on_public_bind": True}
    )
    refused = purge(gateway)
    assert refused.status_code == 401, refused.text
    assert "admin_keys" in refused.json()["error"]["message"]  # says how to allow it


def test_auth_off_on_loopback_keeps_the_purge_open(make_gateway):
    assert purge(make_gateway()).status_code == 200


@pytest.fixture
def authed(make_gateway: Any) -> Any:
    return make_gateway(
        auth={
            "keys": [{"sha256": hash_api_key(TENANT), "tenant": "t"}],
            "admin_keys": [hash_api_key(ADMIN)],
            "metrics_keys": [hash_api_key(METRICS)],
        }
    )


@pytest.mark.parametrize("path", ["/metrics", "/dashboard/data"])
def test_metrics_and_dashboard_data_need_a_metrics_or_admin_key_when_auth_is_on(authed, path):
    assert get(authed, path).status_code == 401
    assert get(authed, path, TENANT).status_code == 401  # a tenant's key reads no totals
    assert get(authed, path, METRICS).status_code == 200
    assert get(authed, path, ADMIN).status_code == 200
    assert purge(authed, METRICS).status_code == 401  # a metrics key is not an admin key


def test_the_dashboard_page_itself_is_static_and_stays_reachable(authed):
    assert get(authed, "/dashboard").status_code == 200  # HTML only: its data needs the key


@pytest.mark.parametrize("path", ["/metrics", "/dashboard/data"])
def test_metrics_stay_open_when_auth_is_off_or_when_made_public(make_gateway, path):
    assert get(make_gateway(), path).status_code == 200
    public = make_gateway(
        auth={"keys": [{"sha256": hash_api_key(TENANT), "tenant": "t"}], "public_metrics": True}
    )
    assert get(public, path).status_code == 200
