"""``nearline advise`` on request logs written by the gateway's own writer, with known traffic
(``gateway_log.chat_traffic``): a streamed chat path with abandonment and two upstream errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nearline.cli import main
from nearline.gateway.warm import read_questions

PATH = "chat.completions chat"


def advise_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["advise", *argv, "--format", "json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def only_path(report: dict[str, Any]) -> dict[str, Any]:
    (path,) = [p for p in report["paths"] if p["path"] == PATH]
    found: dict[str, Any] = path
    return found


@pytest.fixture
def plain_log(tmp_path: Path, traffic: Any) -> Path:
    log: Path = traffic.write_log(tmp_path / "requests.sqlite", traffic.chat_traffic(False))
    return log


def test_a_streamed_chat_path_is_never_batch_without_a_given_delay_cost(
    plain_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = only_path(advise_json(capsys, "--log", str(plain_log)))
    assert path["interactive"] is True
    assert "batch" not in path["recommendation"]
    batch = next(o for o in path["options"] if o["mode"] == "batch")
    assert batch["ruled_out"] and "interactive" in batch["ruled_out"]
    # The delay cost was derived from the abandonment, and the output says from what.
    assert path["delay_cost"]["source"] == "derived"
    assert "derived from measured abandonment" in path["delay_cost"]["note"]
    assert path["delay_cost"]["slope_per_s"]["value"] > 0  # longer waits: more users leave
    assert path["delay_cost"]["slope_per_s"]["sample_size"] == 240
    # A delay cost the user gives decides: 0 says waiting costs nothing, and batch (half
    # price per request) wins. Without the rule above the derived cost would allow it too.
    given = only_path(advise_json(capsys, "--log", str(plain_log), "--delay-cost-per-second", "0"))
    assert given["delay_cost"]["source"] == "given"
    assert given["recommendation"].startswith("batch")


def test_reliability_uses_the_measured_errors_with_an_interval(
    plain_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = only_path(advise_json(capsys, "--log", str(plain_log)))
    reliability = path["reliability"]
    # 32 abandoned (every third request waiting over 3 s): their outcome is unknown; the
    # 2 upstream errors are among the other 208.
    ran = 240 - 32
    assert path["sample_size"] == 240
    assert path["measured"]["abandonment"]["value"] == pytest.approx(32 / 240)
    assert reliability["source"] == "measured"
    assert reliability["sample_size"] == ran
    assert reliability["value"] == pytest.approx(1 - 2 / ran)
    assert reliability["ci_low"] < reliability["value"] < reliability["ci_high"] < 1
    p95 = path["measured"]["time_to_first_useful_p95_ms"]
    assert p95["ci_low"] <= p95["value"] <= p95["ci_high"]


def test_monthly_figures_from_minutes_carry_a_warning(
    plain_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = advise_json(capsys, "--log", str(plain_log))
    assert report["warnings"] == [
        f"{PATH}: monthly figures extrapolate 6 min of traffic (240 requests) to 30 days "
        "(x7,200); they hold only if that traffic is typical"
    ]
    assert main(["advise", "--log", str(plain_log)]) == 0
    assert "Warning: short observation" in capsys.readouterr().out


def test_a_profile_overlays_the_log_field_by_field(
    plain_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        f"name: shop\npaths:\n  - name: {PATH}\n    requests_per_day: 100000\n"
        "    delay_cost_per_second_usd: 0.01\n"
    )
    path = only_path(advise_json(capsys, "--log", str(plain_log), str(profile)))
    assert path["requests_per_month"] == pytest.approx(3_000_000)  # the profile's
    assert path["profile_fields"] == ["requests_per_day"]
    assert path["delay_cost"]["source"] == "given"
    measured_p95 = path["measured"]["time_to_first_useful_p95_ms"]["value"] / 1000
    assert path["options"][0]["p95_s"] == pytest.approx(measured_p95)  # the log's


def test_paraphrases_cluster_into_a_warm_file_and_follow_ups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], traffic: Any
) -> None:
    first, then = traffic.FIRST[0], traffic.THEN[0]
    log = traffic.write_log(tmp_path / "requests.sqlite", traffic.chat_traffic())
    warm = tmp_path / "warm.jsonl"
    report = advise_json(capsys, "--log", str(log), "--warm-file", str(warm))
    pre = report["precompute"]
    assert [(c["question"], c["requests"], c["wordings"]) for c in pre["top"]] == [
        (first, 40, 2),
        (then, 40, 2),
    ]
    assert pre["share"] == pytest.approx(80 / 240)
    assert pre["cost_share"] == pytest.approx(80 / 240)
    assert pre["warm_file"] == str(warm) and pre["warm_questions"] == 2
    questions, bad = read_questions(warm.read_text().splitlines(), None)
    assert bad == []
    assert [q.body["messages"][-1]["content"] for q in questions] == [first, then]
    assert all(q.body["model"] == "chat" for q in questions)
    assert [(f["first"], f["then"]) for f in pre["follow_ups"]] == [(first, then)]
    # Without the embedder the wordings stay apart: the clustering above is the model's.
    apart = advise_json(capsys, "--log", str(log), "--no-embed")["precompute"]
    assert {(c["requests"], c["wordings"]) for c in apart["top"]} == {(24, 1), (16, 1)}


def test_what_if_ranks_mitigations_and_a_cache_never_makes_it_slower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], traffic: Any
) -> None:
    rows = traffic.chat_traffic()
    # A cheaper model on the same route, measured: the what-if can route to it.
    rows += [
        traffic.record(r.ts + 0.5, model="light", first_ms=300.0, cost=0.0002) for r in rows[:60]
    ]
    log = traffic.write_log(tmp_path / "requests.sqlite", rows)
    path = only_path(advise_json(capsys, "--log", str(log)))
    actions = {a["action"]: a for a in path["actions"]}
    assert set(actions) == {
        "exact cache",
        "semantic cache",
        "prefetch follow-ups",
        "progressive drafts",
        "cheaper tier (chat.completions light)",
    }
    base = path["baseline"]
    for name in ("exact cache", "semantic cache", "prefetch follow-ups", "progressive drafts"):
        ttfu = actions[name]["time_to_first_useful"]
        assert ttfu["p50_ms"]["value"] <= base["p50_ms"]["value"], name
        assert ttfu["p95_ms"]["value"] <= base["p95_ms"]["value"], name
    exact, semantic = actions["exact cache"], actions["semantic cache"]
    assert 0 < exact["affected"]["value"] < semantic["affected"]["value"]  # paraphrases too
    assert (
        semantic["spend_usd_per_month"] < exact["spend_usd_per_month"] < base["spend_usd_per_month"]
    )
    assert actions["progressive drafts"]["time_to_first_useful"]["band"] == "flow kept"
    values = [a["value_usd_per_month"] for a in path["actions"]]
    assert values == sorted(values, reverse=True)
    assert [a["rank"] for a in path["actions"]] == list(range(1, len(values) + 1))


def test_text_and_html_show_the_same_advice(
    plain_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["advise", "--log", str(plain_log), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>") and PATH in page and "What-if" in page
    assert main(["advise", "--log", str(plain_log), "--no-embed"]) == 0
    text = capsys.readouterr().out
    assert "x batch (every 24 h)" in text
    assert "failed 1.0% [0.3%-3.4%, n=208]" in text
