"""The dashboard in real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real gateway answers known traffic through nearline's mock upstreams; more arrives while
the page is open. The test waits for the charts to show those numbers, checks the visible
figures, and saves a screenshot to ``$NEARLINE_TEST_ARTIFACTS`` (or the test's tmp dir); with
``NEARLINE_UPDATE_DOCS_IMAGES=1`` it also refreshes ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nearline.testing import serve_in_thread
from nearline.worker.metrics import WorkerMetrics

pytestmark = pytest.mark.slow

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


def worker_with_lag() -> Starlette:
    metrics = WorkerMetrics(registry=CollectorRegistry())
    metrics.lag.labels("transactions", "fraud-scoring").set(42)
    metrics.pending.labels("transactions", "fraud-scoring").set(7)

    async def page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain")

    return Starlette(routes=[Route("/metrics", page)])


async def figure(page: Page, name: str) -> str:
    return await page.locator(f'[data-figure="{name}"]').inner_text()


async def wait_for_figure(page: Page, name: str, text: str) -> None:
    await page.wait_for_function(
        '([name, text]) => document.querySelector(`[data-figure="${name}"]`).textContent === text',
        arg=[name, text],
        timeout=30_000,
    )


async def test_dashboard_draws_live_figures(traffic, browser: Browser, tmp_path: Path):
    with (
        serve_in_thread(worker_with_lag()) as worker,
        traffic.gateway(dashboard={"worker_metrics_urls": [f"{worker}/metrics"]}) as url,
    ):
        traffic.send_known(url)  # 5 answers: 3 ok (2 exact hits), 1 error, 1 abandoned
        traffic.data_when(url, lambda d: d["abandoned"]["count"] == 1)
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{url}/dashboard?interval_ms=500")
        await wait_for_figure(page, "requests", "5")

        # while the page is open: 3 fast, 3 steady (~250 ms), 1 slow (~1.2 s) computed answers
        for model, count in (("fast", 3), ("steady", 3), ("slow", 1)):
            for number in range(count):
                assert traffic.ask(url, model, f"question {number}").status_code == 200
        await wait_for_figure(page, "requests", "12")
        await page.wait_for_function(
            "document.querySelector('[data-figure=\"live\"]').textContent.startsWith('now: p50')"
        )
        await page.wait_for_function(  # p50 and p95 both drawn
            "document.querySelectorAll('#live polyline').length === 2"
        )

        assert errors == []
        assert await figure(page, "cache-hit-share") == "17 %"  # 2 hits of 12 lookups
        assert await figure(page, "tokens-saved") == "24"  # 2 x (4 prompt + 8 completion)
        assert await figure(page, "usd-saved") == "$0.0003"  # 2 x (4 x $3 + 8 x $15) / 1e6
        assert await figure(page, "abandoned") == "1 (8 %)"
        assert await figure(page, "errors") == "1 (8 %)"

        # the histogram's bars hold every answer that showed useful content (all but the error)
        bars = page.locator("#histogram rect[data-count]")
        counts = [float(c) for c in await bars.evaluate_all("bs => bs.map(b => b.dataset.count)")]
        assert len(counts) == 12 and sum(counts) == 11  # 11 buckets + the one beyond 30 s
        assert await page.locator("#histogram text", has_text="1 s").count() >= 1
        bands = await page.locator("#bands .legend").inner_text()
        by_band = {m[1]: int(m[2]) for m in re.finditer(r"([a-z ]+) \([^)]*\): (\d+)", bands)}
        assert sum(by_band.values()) == 11
        assert by_band["attention kept"] + by_band["lost"] >= 1  # the slow answer (>= 1.2 s)

        assert "exact hits" in await page.locator("#cache").inner_text()
        assert "transactions · fraud-scoring" in await page.locator("#workers").inner_text()
        lag = page.locator("#workers rect[data-value]")
        assert await lag.evaluate_all("bs => bs.map(b => b.dataset.value)") == ["42", "7"]
        assert await page.locator("#live polyline").count() == 2  # p50 and p95

        shot = Path(os.environ.get("NEARLINE_TEST_ARTIFACTS") or tmp_path) / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=shot, full_page=True)
    if os.environ.get("NEARLINE_UPDATE_DOCS_IMAGES") == "1":
        shutil.copyfile(shot, DOCS_IMAGE)
