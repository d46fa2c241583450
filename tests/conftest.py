"""Fixtures shared by every test package. Server helpers live in ``nearline.testing``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [  # headless, as root, with this machine's closed network
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def _request_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways built in a test write their request log under the test's tmp dir."""
    monkeypatch.setenv("NEARLINE_REQUEST_LOG__SQLITE_PATH", str(tmp_path / "requests.sqlite"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser build)."""
    if not HAVE_CHROMIUM:
        pytest.fail("chromium is not installed: apt-get install -y chromium (see .ci/run)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
