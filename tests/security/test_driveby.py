"""Issue 13, point 4: another web page in the user's browser cannot use the gateway.

On the defaults (auth off, loopback): a request whose ``Origin`` is not the gateway's own
(or an allowed one) is refused with a 403, preflights included; bodies must be JSON (a
``text/plain`` "simple request" needs no preflight, so it gets a 415 even without an
Origin); the ``Host`` must name the bind (DNS rebinding); a WebSocket upgrade from a
foreign ``Origin`` is refused. ``server.allowed_origins`` turns CORS on for those origins;
``server.allowed_hosts`` names the hosts a proxy or DNS name adds. The browser proof is
``test_browser_driveby.py``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from nearline.testing import http
from nearline.testing.ws import until_done

EVIL = "http://evil.example"
BODY = {"model": "m", "messages": [{"role": "user", "content": "What is a cache?"}]}


def post(
    gateway: Any, path: str = "/v1/chat/completions", *, body: Any = BODY, **headers: str
) -> httpx.Response:
    """POST ``body`` as JSON bytes with exactly the given headers (``content_type`` too)."""
    content_type = headers.pop("content_type", "application/json")
    sent = {"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return http.post(f"{gateway.url}{path}", content=orjson.dumps(body), headers=sent, timeout=10)


def port_of(gateway: Any) -> int:
    port = urlsplit(gateway.url).port
    assert port is not None
    return port


@pytest.fixture(scope="module")
def gateway(make_module_gateway: Any) -> Any:
    return make_module_gateway()


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_a_foreign_origin_cannot_chat(gateway, content_type):
    upstream = gateway.upstream.since()
    refused = post(gateway, content_type=content_type, origin=EVIL)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    assert upstream.requests() == 0


def test_a_foreign_origin_cannot_purge(gateway):
    assert post(gateway, "/admin/cache/purge", body={}, origin=EVIL).status_code == 403
    assert post(gateway, "/admin/cache/purge", body={}, origin="null").status_code == 403


def test_a_foreign_preflight_is_refused(gateway):
    preflight = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={
            "origin": EVIL,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
        timeout=5,
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


def test_chat_bodies_must_be_json(gateway):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = post(gateway, content_type=content_type)
        assert refused.status_code == 415, (content_type, refused.text)
        assert refused.json()["error"]["code"] == "unsupported_media_type"
    assert post(gateway, content_type="application/json; charset=utf-8").status_code == 200


def test_the_gateways_own_origin_is_served(gateway):
    assert post(gateway, origin=gateway.url).status_code == 200
    assert post(gateway, origin=f"http://localhost:{port_of(gateway)}").status_code == 403
    assert post(gateway).status_code == 200  # no Origin: not a browser page


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}"]
)
def test_a_rebound_host_name_is_refused(gateway, host):
    refused = post(gateway, host=host.format(port=port_of(gateway)))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "host_not_allowed"
    health = http.get(
        f"{gateway.url}/healthz", headers={"host": host.format(port=port_of(gateway))}
    )
    assert health.status_code == 403  # every path: a rebound page could read any of them


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}"])
def test_loopback_names_with_the_port_are_served(gateway, host):
    assert post(gateway, host=host.format(port=port_of(gateway))).status_code == 200
    assert post(gateway, host="localhost:1").status_code == 403  # another port: not this bind


def test_configured_hosts_and_origins(make_gateway):
    site = "https://app.example"
    gateway = make_gateway(server={"allowed_hosts": ["gateway.example"], "allowed_origins": [site]})
    assert post(gateway, host="gateway.example").status_code == 200
    assert post(gateway, host="gateway.example:8443").status_code == 200
    assert post(gateway, host="other.example").status_code == 403
    preflight = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={
            "origin": site,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
        timeout=5,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == site
    served = post(gateway, origin=site)
    assert served.status_code == 200
    assert served.headers["access-control-allow-origin"] == site
    assert "x-request-id" in served.headers["access-control-expose-headers"].lower()
    assert post(gateway, origin=EVIL).status_code == 403


async def test_a_websocket_from_a_foreign_origin_is_refused_at_the_upgrade(gateway):
    upstream = gateway.upstream.since()
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.ws, origin=EVIL)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert upstream.requests() == 0
    async with connect(gateway.ws, origin=gateway.url) as socket:  # type: ignore[arg-type]
        await socket.send(orjson.dumps({"type": "chat", "id": "1", "body": BODY}).decode())
        replies = await until_done(socket, {"1"})
        assert replies[-1]["type"] == "done"
