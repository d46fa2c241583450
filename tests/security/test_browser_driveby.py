"""Issue 13, points 4 and 9: the drive-by guard in real headless Chromium.

A page served from another origin (a second local HTTP server, on another port) runs in the
same browser as the user's gateway, which has auth off (the loopback default). It cannot
chat (``text/plain`` "simple request" or JSON with its preflight), cannot purge the cache
and cannot read an answer over a WebSocket: the mock upstream is never asked and the cached
entry survives. The control: the very same page script succeeds once its origin is in
``server.allowed_origins`` (so the browser really did send), and the gateway's own ``/chat``
page still answers over SSE and WebSocket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from nearline.testing import serve_in_thread

pytestmark = pytest.mark.slow

NO_CACHE_LOOKUP = {"semantic": {"enabled": False}}  # no embedder to load: exact tier only

ATTACK = """async (gateway) => {
    const body = JSON.stringify({model: "m", messages: [{role: "user", content: "drive-by"}]});
    const attempt = async (path, init) => {
        try {
            const response = await fetch(gateway + path, {method: "POST", body, ...init});
            return {status: response.status, type: response.type,
                    text: response.type === "opaque" ? "" : await response.text()};
        } catch (error) {
            return {error: String(error)};
        }
    };
    const socket = () => new Promise((resolve) => {
        const seen = {opened: false, messages: []};
        const ws = new WebSocket(gateway.replace("http", "ws") + "/v1/ws");
        ws.onopen = () => {
            seen.opened = true;
            ws.send(JSON.stringify({type: "chat", id: "x", body: JSON.parse(body)}));
        };
        ws.onmessage = (event) => {
            seen.messages.push(JSON.parse(event.data));
            if (seen.messages.some((m) => m.type === "done" || m.type === "error")) ws.close();
        };
        ws.onclose = () => resolve(seen);
        setTimeout(() => resolve(seen), 5000);
    });
    const plain = {"Content-Type": "text/plain"}, json = {"Content-Type": "application/json"};
    const chat = "/v1/chat/completions", purge = "/admin/cache/purge";
    return {
        plain: await attempt(chat, {mode: "no-cors", headers: plain}),
        plainCors: await attempt(chat, {headers: plain}),
        json: await attempt(chat, {headers: json}),
        purge: await attempt(purge, {mode: "no-cors", headers: plain, body: "{}"}),
        purgeJson: await attempt(purge, {headers: json, body: "{}"}),
        socket: await socket(),
    };
}"""


@pytest.fixture
def other_site() -> Iterator[str]:
    """Another origin: a plain page on a second local HTTP server."""

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>another site</title><p>hello</p>")

    with serve_in_thread(Starlette(routes=[Route("/", page)])) as url:
        yield url


async def run_attack(browser: Browser, site: str, gateway: Any) -> dict[str, Any]:
    page = await browser.new_page()
    try:
        await page.goto(site)
        result: dict[str, Any] = await page.evaluate(ATTACK, gateway.url)
        return result
    finally:
        await page.close()


async def test_a_page_from_another_origin_cannot_chat_purge_or_read_a_socket(
    make_gateway, browser: Browser, other_site: str
):
    gateway = make_gateway(cache=NO_CACHE_LOOKUP)
    assert gateway.chat("seeded").status_code == 200  # a cached entry a purge would drop
    upstream = gateway.upstream.since()

    result = await run_attack(browser, other_site, gateway)

    assert upstream.requests() == 0, result  # no chat reached the model, on any path
    assert result["plain"]["type"] == "opaque"  # sent, unreadable, and refused (count above)
    assert "error" in result["plainCors"]  # no CORS grant: the page reads nothing
    assert "error" in result["json"]  # its preflight was refused: the POST never went
    assert "error" in result["purgeJson"]
    assert result["socket"] == {"opened": False, "messages": []}  # refused at the upgrade
    assert gateway.chat("seeded").headers["x-nearline-source"] == "exact"  # not purged


async def test_the_same_page_succeeds_once_its_origin_is_allowed(
    make_gateway, browser: Browser, other_site: str
):
    """The control: the browser really sends all of the above."""
    gateway = make_gateway(cache=NO_CACHE_LOOKUP, server={"allowed_origins": [other_site]})
    result = await run_attack(browser, other_site, gateway)
    assert result["json"]["status"] == 200, result
    assert result["plainCors"]["status"] == 415  # allowed origin, but bodies must be JSON
    assert result["purgeJson"]["status"] == 200
    assert result["socket"]["opened"] is True
    assert [m["type"] for m in result["socket"]["messages"]][-1] == "done"


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_the_gateways_own_chat_page_still_works(make_gateway, browser: Browser, transport):
    gateway = make_gateway(cache=NO_CACHE_LOOKUP)
    page = await browser.new_page()
    try:
        await page.goto(f"{gateway.url}/chat")
        await page.locator("#model option[value='m']").wait_for(state="attached")
        await page.select_option("#transport", transport)
        await page.fill("#question", "What is a cache?")
        await page.press("#question", "Enter")
        bubble = page.locator(".message.assistant").first
        await bubble.and_(page.locator('[data-state="final"]')).wait_for(timeout=30_000)
        assert (await bubble.locator(".refined").inner_text()).strip()
    finally:
        await page.close()
    assert gateway.upstream.requests() == 1
