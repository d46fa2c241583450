"""``nearline report`` on the request log of a real gateway run: requests through the gateway
to nearline's mock upstreams (fast, slow, failing, trickling), then the report is read back
and checked against what was sent and against the gateway's own Prometheus counters."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nearline.cli import main
from nearline.testing import eventually, http
from nearline.testing.mock_upstream import MockBehaviour

PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
UPSTREAMS = {
    "fast": MockBehaviour(ttft_s=0.01, tokens_per_s=500, completion_tokens=8),
    "slow": MockBehaviour(ttft_s=1.3, tokens_per_s=500, completion_tokens=8),
    "broken": MockBehaviour(error_rate=1.0),
    "trickle": MockBehaviour(ttft_s=0.01, tokens_per_s=4, completion_tokens=40),
}


def counter_sum(metrics_text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name
    )


def ask(url: str, model: str, question: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    return http.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def leave_after_first_content(url: str, model: str, question: str) -> None:
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    with http.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if '"content"' in line:
                return  # the client goes away mid-answer


@pytest.fixture(scope="module")
def gateway_run(tmp_path_factory: pytest.TempPathFactory, make_module_gateway) -> tuple[Path, str]:
    """Serve the gateway over the mock upstreams, send the traffic; yield (log, /metrics)."""
    db = tmp_path_factory.mktemp("gateway-run") / "requests.sqlite"
    mocks = {name: make_module_gateway.mock(b) for name, b in UPSTREAMS.items()}
    gateway = make_module_gateway(
        providers={name: {"base_url": mock.base_url} for name, mock in mocks.items()},
        models={name: {"provider": name, "price": PRICE} for name in mocks},
        cache={"semantic": {"enabled": False}},
        request_log={"sqlite_path": str(db)},
    )
    url = gateway.url
    for _ in range(3):  # computed once, then two exact-cache hits
        assert ask(url, "fast", "what is a cache?").status_code == 200
    for _ in range(2):  # a slow computed answer, then a hit
        assert ask(url, "slow", "what is latency?").status_code == 200
    assert ask(url, "broken", "anyone there?").status_code == 502
    leave_after_first_content(url, "trickle", "tell me a long story")

    def abandonment_counted() -> str | None:  # the gateway notices the hang-up a moment later
        text = http.get(f"{url}/metrics", timeout=10).text
        return text if counter_sum(text, "nearline_abandoned_total") >= 1 else None

    metrics = eventually(abandonment_counted, 10, interval_s=0.05)
    gateway.stop()  # shutting the gateway down flushed the request log
    return db, metrics


def test_report_of_a_real_gateway_run(gateway_run: tuple[Path, str], capsys):
    db, metrics = gateway_run
    assert main(["report", "--sqlite", str(db), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)

    assert figures["requests"] == 7
    paths = {p["name"]: p for p in figures["paths"]}
    assert {name: p["requests"] for name, p in paths.items()} == {
        "chat.completions · fast · exact": 2,
        "chat.completions · fast · inference": 1,
        "chat.completions · slow · exact": 1,
        "chat.completions · slow · inference": 1,
        "chat.completions · broken · inference": 1,
        "chat.completions · trickle · inference": 1,
    }
    # the slow upstream takes 1.3 s to its first token: past the flow limit, the top slow path
    slow = paths["chat.completions · slow · inference"]
    assert slow["bands"]["instant"] + slow["bands"]["flow kept"] == 0
    assert figures["slow_paths"][0]["name"] == "chat.completions · slow · inference"
    assert figures["slow_paths"][0]["seconds_beyond_flow_limit"] >= 0.3
    # what the report says was saved is what the gateway counted while serving
    savings = figures["savings"]
    assert savings["from_cache"] == 3
    assert savings["tokens_saved"] == counter_sum(metrics, "nearline_tokens_saved_total")
    assert savings["usd_saved"] == pytest.approx(
        counter_sum(metrics, "nearline_money_saved_usd_total")
    )
    endings = figures["endings"]
    assert endings["errors_by_code"] == {"upstream_error": 1}
    assert endings["abandoned"] == 1
    assert endings["abandoned"] == counter_sum(metrics, "nearline_abandoned_total")
    assert paths["chat.completions · trickle · inference"]["abandoned"] == 1


def test_terminal_and_html_pages_of_a_real_gateway_run(
    gateway_run: tuple[Path, str], tmp_path: Path, capsys
):
    db, _ = gateway_run
    page = tmp_path / "report.html"
    assert main(["report", "--sqlite", str(db), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "answered from cache  3 of 7 (43 %): exact 3" in out
    assert "1  chat.completions · slow · inference" in out
    assert "chat.completions · slow · inference" in page.read_text()
