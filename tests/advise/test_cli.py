"""``nearline advise`` end to end: the tables, --json, --log, --price and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nearline.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples" / "advise"


def test_table_for_the_support_chatbot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", str(EXAMPLES / "support-chatbot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Options per path" in out
    assert "* batch (every 24 h)" in out  # conversation tagging is read the next morning
    assert "Worth making faster" in out
    assert "Assumptions" in out


def test_json_matches_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", str(EXAMPLES / "fraud-scoring.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paths = {path["path"]: path for path in report["paths"]}
    auth = paths["authorisation score"]
    assert auth["recommended"]["mode"] == "real-time"
    assert auth["band"] == "instant"
    assert all(o["p95_s"] <= 0.3 for o in auth["options"] if o["meets_deadline"])
    agent = paths["case investigation agent"]
    assert agent["reliability"]["value"] == pytest.approx(0.95**20)
    assert agent["reliability"]["source"] == "modelled"  # from the steps: no log
    assert agent["recommendation"] == "batch (every 60 min)"
    assert agent["sample_size"] is None
    assert [b["band"] for b in report["bands"]] == [
        "instant",
        "flow kept",
        "attention kept",
        "lost",
    ]


def test_price_override_changes_the_cost(capsys: pytest.CaptureFixture[str]) -> None:
    profile = str(EXAMPLES / "fraud-scoring.yaml")
    main(["advise", profile, "--json"])
    before = json.loads(capsys.readouterr().out)["paths"][0]["options"][0]
    main(["advise", profile, "--json", "--price", "instance_hour_usd=0.80"])
    after = json.loads(capsys.readouterr().out)["paths"][0]["options"][0]
    assert after["capacity_usd"] == pytest.approx(2 * before["capacity_usd"])


def test_request_log_mode(capsys: pytest.CaptureFixture[str]) -> None:
    log = EXAMPLES / "requests.jsonl"
    code = main(["advise", "--log", str(log), "--delay-cost-per-second", "0.01", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert {p["path"] for p in report["paths"]} == {"chat", "search"}
    assert all(p["abandoned_share"] is not None for p in report["paths"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["advise"], "give a profile, --log/--postgres, or both"),
        (["advise", "missing.yaml"], "missing.yaml: cannot read the profile"),
        (["advise", "--log", "missing.jsonl"], "missing.jsonl: [Errno 2]"),
        (["advise", "--postgres", "postgresql://nobody@127.0.0.1:1/x"], "connection failed"),
    ],
)
def test_unusable_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nearline: ")
    assert message in err
    assert err.count("\n") == 1  # one line, even for a multi-line driver message


def test_unknown_price_is_an_argument_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["advise", str(EXAMPLES / "fraud-scoring.yaml"), "--price", "gpu=1"])
    assert exit_info.value.code == 2
