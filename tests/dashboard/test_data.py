"""``GET /dashboard/data``: the figures the page draws, from the gateway's own registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nearline.config import load_settings
from nearline.core.errors import ConfigError
from nearline.testing import free_port, http, serve_in_thread
from nearline.worker.metrics import WorkerMetrics


def metric_sum(metrics_text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name
    )


def test_figures_after_known_traffic(traffic):
    with traffic.gateway() as url:
        assert http.get(f"{url}/dashboard/data", timeout=10).json()["requests"]["total"] == 0
        traffic.send_known(url)
        data = traffic.data_when(url, lambda d: d["abandoned"]["count"] == 1)
        metrics = http.get(f"{url}/metrics", timeout=10).text

    assert data["requests"] == {"total": 5, "ok": 3, "error": 1, "abandoned": 1}
    # first useful content: the three fast answers and the abandoned stream's first token
    assert data["first_useful"]["count"] == 4
    assert sum(b["count"] for b in data["first_useful"]["buckets"]) == 4
    assert [b["band"] for b in data["bands"]] == ["instant", "flow kept", "attention kept", "lost"]
    assert sum(b["count"] for b in data["bands"]) == 4
    assert [b["upper_s"] for b in data["bands"]] == [0.1, 1.0, 10.0, None]
    assert data["first_useful"]["buckets"][-1]["le"] is None  # the +Inf bucket
    assert set(data["first_useful_by_source"]) == {"inference", "exact"}
    assert data["first_useful_by_source"]["exact"]["count"] == 2

    assert data["cache"]["hits"] == {"exact": 2}
    assert data["cache"]["misses"] == 3  # fast's first ask, broken, trickle
    assert data["cache"]["hit_share"] == pytest.approx(2 / 5)
    # two hits replayed the first answer: its prompt (4 words) and completion (8 tokens), twice
    assert data["saved"]["tokens"] == 2 * (4 + 8)
    assert data["saved"]["tokens"] == metric_sum(metrics, "nearline_tokens_saved_total")
    assert data["saved"]["usd"] == pytest.approx(2 * (4 * 3.0 + 8 * 15.0) / 1e6)
    assert data["abandoned"] == {"count": 1, "share": pytest.approx(1 / 5)}
    assert data["errors"]["answers"] == 1
    assert set(data["errors"]["by_code"]) == {"upstream_error"}
    assert data["workers"] == []


def worker_metrics_app(lag: float, pending: float) -> Starlette:
    """A worker's /metrics, from the worker's own metric definitions."""
    metrics = WorkerMetrics(registry=CollectorRegistry())
    metrics.lag.labels("events", "fraud").set(lag)
    metrics.pending.labels("events", "fraud").set(pending)

    async def page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain")

    return Starlette(routes=[Route("/metrics", page)])


def test_worker_lag_per_group_and_unreachable_workers(traffic):
    nobody = f"http://127.0.0.1:{free_port()}/metrics"
    with serve_in_thread(worker_metrics_app(lag=42, pending=3)) as worker:
        urls = [f"{worker}/metrics", nobody]
        with traffic.gateway(dashboard={"worker_metrics_urls": urls}) as url:
            workers = http.get(f"{url}/dashboard/data", timeout=10).json()["workers"]
    assert workers[0] == {
        "url": f"{worker}/metrics",
        "error": None,
        "groups": [{"stream": "events", "group": "fraud", "lag": 42.0, "pending": 3.0}],
    }
    assert workers[1]["url"] == nobody
    assert workers[1]["groups"] == []
    assert "ConnectError" in workers[1]["error"]


def test_worker_urls_must_be_http():
    with pytest.raises(ConfigError, match=r"dashboard\.worker_metrics_urls\.0"):
        load_settings(dashboard={"worker_metrics_urls": ["redis://127.0.0.1:6379"]})


def test_the_page_and_its_files_are_served(traffic):
    with traffic.gateway() as url:
        page = http.get(f"{url}/dashboard", timeout=10)
        assert page.status_code == 200
        assert 'src="static/dashboard.js"' in page.text
        for name in ("dashboard.js", "dashboard.css"):
            assert http.get(f"{url}/static/{name}", timeout=10).status_code == 200
