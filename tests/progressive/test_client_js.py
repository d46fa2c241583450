"""``/static/nearline.js`` in headless Chromium, against a real gateway and the mock upstream:
plain streams, errors, and cancel over the socket. Also the static file router."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser, Page

from nearline.config import hash_api_key
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

pytestmark = pytest.mark.slow


async def client_page(browser: Browser, gateway: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{gateway}/chat")
    await page.evaluate("async () => { window.nl = await import('/static/nearline.js'); }")
    return page


async def test_stream_chat_reads_a_plain_stream_and_reports_errors(make_stack, browser):
    with make_stack(MockBehaviour(ttft_s=0.05, tokens_per_s=400)) as stack:
        page = await client_page(browser, stack.gateway)
        result = await page.evaluate(
            """async () => {
                const deltas = [];
                const done = [];
                const result = await nl.streamChat({
                    body: {model: "big", messages: [{role: "user", content: "hello"}]},
                    onDelta: (t) => deltas.push(t),
                    onDone: (d) => done.push(d),
                });
                const errors = [];
                const failed = await nl.streamChat({
                    body: {model: "nope", messages: [{role: "user", content: "hello"}]},
                    onError: (e) => errors.push(e),
                });
                return {result, deltas, done, failed, errors};
            }"""
        )
    expected = " ".join(deterministic_words([{"role": "user", "content": "hello"}], None, 24))
    assert result["result"]["text"] == expected == "".join(result["deltas"])
    assert result["result"]["preliminary"] is None  # no draft model configured here
    assert result["result"]["finishReason"] == "stop"
    assert result["done"] == [{"finishReason": "stop", "source": "inference", "text": expected}]
    assert result["failed"]["error"]["code"] == "model_not_found"
    assert [e["code"] for e in result["errors"]] == ["model_not_found"]


async def test_the_socket_client_cancels_one_request_and_finishes_the_other(make_stack, browser):
    slow = MockBehaviour(ttft_s=0.01, tokens_per_s=10, completion_tokens=200)
    with make_stack(slow) as stack:
        page = await client_page(browser, stack.gateway)
        await page.evaluate(
            """() => {
                window.socket = new nl.NearlineSocket({});
                window.seen = {long: 0};
                window.long = socket.chat(
                    {model: "big", messages: [{role: "user", content: "a long one"}]},
                    {onDelta: () => { seen.long += 1; }},
                );
                window.short = socket.chat(
                    {model: "big", max_tokens: 3, messages: [{role: "user", content: "short"}]},
                    {},
                );
                // taken now: a request that has finished is forgotten by the client
                window.shortDone = socket.finished(short);
            }"""
        )
        await page.wait_for_function("seen.long >= 2")
        cancelled = await page.evaluate("socket.cancel(long); socket.finished(long)")
        # finished() after cancel: the request is forgotten at once
        assert cancelled is None
        short = await page.evaluate("shortDone")
        stats = await asyncio.to_thread(stack.wait_for_stats, "cancelled", 1)
        await page.evaluate("socket.close()")
    assert short["finishReason"] == "length"
    assert short["error"] is None
    assert len(short["text"].split()) == 3
    assert stats["cancelled"] == 1


def test_static_files_are_served_by_exact_name_only(make_stack):
    with make_stack(MockBehaviour()) as stack:
        page = http.get(f"{stack.gateway}/", timeout=5)
        script = http.get(f"{stack.gateway}/static/nearline.js", timeout=5)
        escapes = [
            http.get(f"{stack.gateway}/static/..%2Fapp.py", timeout=5),
            http.get(f"{stack.gateway}/static/%2e%2e%2fpages.py", timeout=5),
            http.get(f"{stack.gateway}/static/missing.js", timeout=5),
        ]
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>nearline" in page.text
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export async function streamChat" in script.text
    assert [r.status_code for r in escapes] == [404, 404, 404]
    assert escapes[2].json()["error"]["code"] == "not_found"


async def test_the_page_asks_for_a_key_and_sends_it_over_both_transports(make_stack, browser):
    key = "sk-page-key"
    auth = {"auth": {"keys": [{"sha256": hash_api_key(key), "tenant": "web"}]}}
    with make_stack(MockBehaviour(ttft_s=0.05, tokens_per_s=400), **auth) as stack:
        page = await browser.new_page()
        await page.goto(f"{stack.gateway}/chat")
        await page.locator('body[data-ready="true"]').wait_for()
        assert await page.locator("#model option").all_inner_texts() == ["enter an API key"]
        await page.fill("#api-key", key)
        await page.locator("#api-key").dispatch_event("change")
        await page.locator('#model option[value="big"]').wait_for(state="attached")
        for number, transport in enumerate(["sse", "ws"]):
            await page.select_option("#transport", transport)
            await page.fill("#question", f"question {number}")
            await page.press("#question", "Enter")
            bubble = page.locator(".message.assistant").nth(number)
            await bubble.and_(page.locator('[data-state="final"]')).wait_for(timeout=30_000)
            assert await bubble.locator(".refined").inner_text()
            assert await bubble.locator(".error").inner_text() == ""
        assert stack.stats()["completed"] == 2
