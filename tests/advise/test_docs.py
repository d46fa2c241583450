"""docs/advise.md shows the real output of the shipped examples; this keeps it true."""

from __future__ import annotations

from pathlib import Path

import pytest

from nearline.cli import main

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["advise", "examples/advise/support-chatbot.yaml"],
        ["advise", "examples/advise/fraud-scoring.yaml"],
        ["advise", "--log", "examples/advise/requests.jsonl", "--delay-cost-per-second", "0.01"],
    ],
)
def test_documented_output_is_current(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    tables = capsys.readouterr().out.split("\nAssumptions")[0].rstrip()
    assert tables in (ROOT / "docs" / "advise.md").read_text(encoding="utf-8")
