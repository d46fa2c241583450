"""The chat page shows each answer's timing, and a draft that stands when the paid model
failed (issue 15), in real headless Chromium against a real gateway (local drafts, nearline's
mock upstream as the paid model)."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser

from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour

pytestmark = pytest.mark.slow

TIME = r"\d+ ms|\d+\.\d s"


def release(mock: str) -> None:
    http.post(f"{mock}/mock/release", timeout=5).raise_for_status()


async def _open(browser: Browser, url: str):  # type: ignore[no-untyped-def]
    page = await browser.new_page(viewport={"width": 900, "height": 640})
    await page.goto(f"{url}/chat?model=big")
    await page.locator('body[data-ready="true"]').wait_for()
    await page.fill("#question", "Say hello in French.")
    await page.press("#question", "Enter")
    return page, page.locator(".message.assistant").first


async def test_each_answer_says_when_content_came_and_when_it_was_refined(
    make_stack, browser: Browser
):
    paid = MockBehaviour(
        ttft_s=0.3, tokens_per_s=80, completion_tokens=12, hold_until_released=True
    )
    with make_stack(paid, with_draft_model=True) as stack:
        page, bubble = await _open(browser, stack.gateway)
        await bubble.and_(page.locator('[data-state="preliminary"]')).wait_for(timeout=60_000)
        release(stack.mock)
        await bubble.and_(page.locator('[data-state="final"]')).wait_for(timeout=60_000)
        timing = await bubble.locator(".timing").inner_text()
    assert re.fullmatch(rf"first content ({TIME}) · refined ({TIME}) · done ({TIME})", timing)


async def test_a_failed_paid_answer_leaves_the_marked_draft(make_stack, browser: Browser):
    with make_stack(MockBehaviour(error_rate=1.0), with_draft_model=True) as stack:
        page, bubble = await _open(browser, stack.gateway)
        await bubble.and_(page.locator('[data-state="final"]')).wait_for(timeout=90_000)
        assert await bubble.get_attribute("data-fallback") == "draft"
        assert await bubble.locator(".badge").inner_text() == "draft"
        assert "refined answer failed" in await bubble.locator(".status").inner_text()
        assert await bubble.locator(".refined").inner_text()  # the draft's text, kept
        assert not await bubble.locator(".error").inner_text()
        timing = await bubble.locator(".timing").inner_text()
    assert re.fullmatch(rf"first content ({TIME}) · no refined answer · done ({TIME})", timing)
