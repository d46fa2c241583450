"""Issue 19 point 4: the advisor can recommend a plan model for a path.

The log is written through the real ``RequestLog``: a strong model's path, and a plan
model's path on the same route whose rows carry the plan's calls (``calls``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from nearline.cli import main
from nearline.core.events import CallCost
from nearline.gateway.telemetry.requestlog import RequestLog, RequestRecord, SqliteSink, calls_json

STRONG_COST, PLAN_COST = 0.01, 0.002  # the measured ratio: 0.2
PLAN_CALLS = (
    CallCost("plan", "frontier", 0.4, 0.0014, prompt_tokens=60, completion_tokens=40),
    CallCost("step", "light", 0.2, 0.0002, prompt_tokens=80, completion_tokens=60, step=1),
    CallCost("step", "light", 0.2, 0.0002, prompt_tokens=90, completion_tokens=60, step=2),
    CallCost("step", "light", 0.2, 0.0002, prompt_tokens=99, completion_tokens=60, step=3),
)


def _row(model: str, at: float, first_ms: float, cost: float, calls: str | None) -> RequestRecord:
    return RequestRecord(
        ts=at,
        request_id=uuid.uuid4().hex,
        tenant="t",
        model=model,
        route="chat.completions",
        source="inference",
        similarity=None,
        stream=True,
        outcome="ok",
        error_code=None,
        time_to_first_useful_ms=first_ms,
        time_to_first_token_ms=first_ms,
        total_ms=first_ms + 3000,
        prompt_tokens=100,
        completion_tokens=200,
        cached_tokens=0,
        cost_usd=cost,
        input="",
        output="x",
        calls=calls,
    )


def write_log(path: Path, *, with_calls: bool = True) -> None:
    async def write() -> None:
        log = RequestLog(SqliteSink(path), buffer_rows=1000, linger_s=0)
        await log.start()
        start = time.time() - 3600
        for i in range(40):
            log.record(_row("strong", start + i * 60, 2400.0 + 10 * i, STRONG_COST, None))
        calls = calls_json(PLAN_CALLS) if with_calls else None
        for i in range(25):  # the planner's first token: its first preliminary
            log.record(_row("research", start + i * 60 + 30, 300.0 + 4 * i, PLAN_COST, calls))
        await log.aclose()

    asyncio.run(write())


def advise(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    argv = ["advise", "--log", str(path), "--no-embed", "--delay-cost-per-second", "0.01"]
    assert main([*argv, *extra, "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    return {path["path"]: path for path in advice["paths"]}


def test_a_plan_on_the_same_route_is_recommended_at_its_measured_cost_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    log = tmp_path / "requests.sqlite"
    write_log(log)
    paths = advise(log, capsys)
    strong = paths["chat.completions strong"]
    actions = {a["action"]: a for a in strong["actions"]}
    plan = actions["plan-and-execute (chat.completions research)"]
    baseline = strong["baseline"]
    assert plan["spend_usd_per_month"] == pytest.approx(0.2 * baseline["spend_usd_per_month"])
    # first useful content: the plan's measured time, the planner's first token (300-396 ms)
    assert 300 <= plan["time_to_first_useful"]["p50_ms"]["value"] <= 396
    assert plan["time_to_first_useful"]["p95_ms"]["value"] <= 396 < baseline["p95_ms"]["value"]
    assert plan["value_usd_per_month"] > 0
    assert plan["affected"]["value"] == 1.0  # every computed request
    assert "cost x 0.20" in plan["note"] and "25 plan answers" in plan["note"]
    assert strong["actions"][0]["action"] == plan["action"]  # it saves the most
    # the plan's own path is not told to become a plan
    research = paths["chat.completions research"]
    assert not [a for a in research["actions"] if a["action"].startswith("plan-and-execute")]


def test_without_calls_in_the_log_the_config_names_the_plan_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    log = tmp_path / "requests.sqlite"
    write_log(log, with_calls=False)
    names = [a["action"] for a in advise(log, capsys)["chat.completions strong"]["actions"]]
    assert not [name for name in names if name.startswith("plan-and-execute")]
    config = tmp_path / "nearline.yaml"
    config.write_text(
        "providers: {up: {base_url: 'http://127.0.0.1:9'}}\n"
        "routing:\n"
        "  tiers:\n"
        "    frontier: {deployments: [{provider: up, upstream_model: p}]}\n"
        "    light: {deployments: [{provider: up, upstream_model: e}]}\n"
        "  plans: {deep: {planner: frontier, executor: light}}\n"
        "models: {research: {provider: 'plan:deep'}, strong: {provider: frontier}}\n"
    )
    paths = advise(log, capsys, "--config", str(config))
    names = [a["action"] for a in paths["chat.completions strong"]["actions"]]
    assert "plan-and-execute (chat.completions research)" in names
