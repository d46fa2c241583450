"""The demo chat page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The gateway is real: the refined answer streams from nearline's mock upstream standing in
for a slow paid model (1.5 s to first token, 40 tokens/s) and the preliminary is a draft
from the light local model (SmolLM2 through llama.cpp), so the page must show the draft
first, marked, then swap in the refinement. Screenshots go to ``$NEARLINE_TEST_ARTIFACTS``
(or the test's tmp dir).
"""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour, deterministic_words

pytestmark = pytest.mark.slow

PAID_TOKENS = 24


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NEARLINE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def refined_text(messages: list[dict[str, str]]) -> str:
    """What the mock upstream answers to ``messages`` (it is deterministic)."""
    return " ".join(deterministic_words(messages, None, PAID_TOKENS))


def release(stack: Any) -> None:
    """Let the held paid answer start (its 1.5 s to first token runs from here)."""
    http.post(f"{stack.mock}/mock/release", timeout=5).raise_for_status()


async def ask(page: Page, text: str, transport: str) -> Any:
    """Send ``text`` from the page; return the new assistant bubble once it shows a draft."""
    await page.select_option("#transport", transport)
    count = await page.locator(".message.assistant").count()
    await page.fill("#question", text)
    await page.press("#question", "Enter")
    bubble = page.locator(".message.assistant").nth(count)
    # the draft is on screen, marked, before any refined text
    await bubble.and_(page.locator('[data-state="preliminary"]')).wait_for(timeout=60_000)
    return bubble


async def show_more_of_the_draft(bubble: Any) -> None:
    """For a telling screenshot only: let the draft grow a little (never fails the test)."""
    for _ in range(40):
        if len(await bubble.locator(".preliminary").inner_text()) > 60:
            return
        await bubble.page.wait_for_timeout(250)


SAMPLE_EVERY_FRAME = """() => {
    // What the last assistant bubble shows, once per rendered frame.
    window.frames_seen = [];
    const tick = () => {
        const bubbles = document.querySelectorAll('.message.assistant');
        const el = bubbles[bubbles.length - 1];
        if (el) {
            const p = el.querySelector('.preliminary');
            const r = el.querySelector('.refined');
            window.frames_seen.push({
                state: el.dataset.state,
                draft: p.hidden ? 0 : Number(getComputedStyle(p).opacity) * (p.textContent ? 1 : 0),
                refined: Number(getComputedStyle(r).opacity) * (r.textContent ? 1 : 0),
                height: el.getBoundingClientRect().height,
            });
        }
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""


def assert_no_flash(frames: list[dict[str, Any]]) -> None:
    """From the draft's first frame to the end: some text is always on screen (no blank
    frame during the swap) and the bubble never shrinks before the answer is final."""
    start = next(i for i, f in enumerate(frames) if f["state"] == "preliminary")
    swapping = [f for f in frames[start:] if f["state"] in ("preliminary", "refining")]
    assert any(f["state"] == "refining" for f in swapping)  # the swap itself was sampled
    blank = [(i, f) for i, f in enumerate(frames[start:]) if max(f["draft"], f["refined"]) < 0.45]
    assert not blank, (blank[:5], len(frames) - start)
    heights = [f["height"] for f in swapping]
    assert all(b >= a - 0.5 for a, b in pairwise(heights)), heights


async def finish(bubble: Any) -> dict[str, Any]:
    await bubble.and_(bubble.page.locator('[data-state="final"]')).wait_for(timeout=60_000)
    data: dict[str, Any] = await bubble.evaluate(
        """el => ({
            preliminaryAt: Number(el.dataset.preliminaryAt),
            firstDeltaAt: Number(el.dataset.firstDeltaAt),
            doneAt: Number(el.dataset.doneAt),
            action: el.dataset.action,
            source: el.dataset.source,
            preliminary: el.querySelector('.preliminary').textContent,
        })"""
    )
    await bubble.locator(".preliminary").wait_for(state="hidden")  # faded out, then removed
    data["visible"] = await bubble.inner_text()
    data["refined"] = await bubble.locator(".refined").inner_text()
    return data


async def test_the_page_shows_a_marked_draft_first_then_the_refined_answer(
    make_stack, browser: Browser, artifacts: Path
):
    # The paid answer is held until the page shows the draft, so the order under test does
    # not depend on how busy this machine is (the local model may need seconds here).
    paid = MockBehaviour(
        ttft_s=1.5, tokens_per_s=12, completion_tokens=PAID_TOKENS, hold_until_released=True
    )
    first_question = "Why is the sky blue?"
    second_question = "And why are sunsets red?"
    with make_stack(paid, with_draft_model=True) as stack:
        page = await browser.new_page(viewport={"width": 900, "height": 640})
        await page.goto(f"{stack.gateway}/chat?model=big")
        await page.locator('body[data-ready="true"]').wait_for()
        await page.evaluate(SAMPLE_EVERY_FRAME)

        bubble = await ask(page, first_question, "sse")
        assert await bubble.locator(".badge").inner_text() == "draft"
        assert await bubble.locator(".preliminary").inner_text()
        assert await bubble.locator(".refined").text_content() == ""
        await show_more_of_the_draft(bubble)
        await page.screenshot(path=artifacts / "progressive-chat-first-draft.png")
        release(stack)
        first = await finish(bubble)
        assert_no_flash(await page.evaluate("window.frames_seen.splice(0)"))

        conversation = [{"role": "user", "content": first_question}]
        assert first["refined"] == refined_text(conversation)
        conversation += [
            {"role": "assistant", "content": first["refined"]},
            {"role": "user", "content": second_question},
        ]
        bubble = await ask(page, second_question, "ws")  # the same page over the WebSocket
        await show_more_of_the_draft(bubble)
        await page.screenshot(path=artifacts / "progressive-chat-draft.png")
        assert await bubble.locator(".refined").text_content() == ""
        release(stack)
        second = await finish(bubble)
        assert_no_flash(await page.evaluate("window.frames_seen.splice(0)"))
        await page.screenshot(path=artifacts / "progressive-chat-final.png")
        timeline = await page.evaluate("window.nearlineTimeline.map(e => e.type)")

    for answer in (first, second):
        assert answer["source"] == "draft"
        assert answer["preliminaryAt"] < answer["firstDeltaAt"] <= answer["doneAt"]
        assert answer["action"] in ("replace", "confirm")
        # the final page holds the refined answer; the draft is no longer shown
        assert answer["refined"] in answer["visible"]
        assert answer["preliminary"].strip() not in answer["visible"]
    assert second["refined"] == refined_text(conversation)
    assert timeline == ["sent", "preliminary", "replace", "delta", "done"] * 2
    assert (artifacts / "progressive-chat-draft.png").stat().st_size > 0
