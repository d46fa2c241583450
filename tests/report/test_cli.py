"""``nearline report`` on a SQLite request log written by the gateway's own sink, and on the
real PostgreSQL server at 127.0.0.1:5432 (a unique tenant, removed afterwards)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest

from nearline.cli import main
from nearline.gateway.telemetry.requestlog import TABLE, PostgresSink, RequestRecord, SqliteSink
from nearline.insights.advise.requestlog import GatewayRequestLog
from nearline.insights.requestlog import LogLocation

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def write_sqlite(path: Path, rows: Sequence[RequestRecord]) -> None:
    sink = SqliteSink(path)
    await sink.open()
    await sink.write(list(rows))
    await sink.aclose()


def report(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


async def test_terminal_page_shows_each_section_with_the_worked_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], worked_example_rows
):
    db = tmp_path / "requests.sqlite"
    await write_sqlite(db, worked_example_rows())
    out = report(capsys, "--sqlite", str(db))
    lines = [line.split() for line in out.splitlines()]
    assert f"nearline report — 9 requests from {db}" in out
    # bands of m's computed answers: 1 instant, 1 flow, 1 attention, 0 lost, 2 without content
    assert [
        "chat.completions", "·", "m", "·", "inference", "5",
        "20", "%", "20", "%", "20", "%", "0", "%", "40", "%", "2.5", "s", "12.0", "s",
    ] in lines  # fmt: skip
    assert "answered from cache  3 of 9 (33 %): exact 2, semantic 1" in out
    assert "tokens saved         70 (prompt 27, completion 43)" in out
    assert "money saved          $0.0040 (each hit at its model's mean computed cost)" in out
    assert "abandoned            1 (11 %), 1 before any content" in out
    assert "errors               1 (11 %): upstream_timeout 1" in out
    slow = out[out.index("SLOW PATHS") :].splitlines()
    first = ["1", "chat.completions", "·", "m", "·", "inference", "14.5", "s", "3", "of", "5"]
    assert slow[3].split() == [*first, "12.0", "s"]
    assert slow[4].split()[:6] == ["2", "chat.completions", "·", "n", "·", "inference"]


async def test_json_since_and_tenant_select_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], worked_example_rows, make_row
):
    db = tmp_path / "requests.sqlite"
    old = make_row("m", "inference", 40, 80, age_s=3 * 3600)
    other = make_row("m", "exact", 5, 10, tenant="globex")
    await write_sqlite(db, [*worked_example_rows(), old, other])
    assert json.loads(report(capsys, "--sqlite", str(db), "--json"))["requests"] == 11
    recent = json.loads(report(capsys, "--sqlite", str(db), "--json", "--since", "2h"))
    assert recent["requests"] == 10
    acme = json.loads(report(capsys, "--sqlite", str(db), "--json", "--tenant", "acme"))
    assert acme["requests"] == 10
    assert acme["slow_paths"][0]["name"] == "chat.completions · m · inference"
    assert acme["slow_paths"][0]["seconds_beyond_flow_limit"] == pytest.approx(14.5)


async def test_html_page_is_self_contained_with_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], worked_example_rows
):
    db, page = tmp_path / "requests.sqlite", tmp_path / "report.html"
    await write_sqlite(db, worked_example_rows())
    report(capsys, "--sqlite", str(db), "--html", str(page))
    html = page.read_text()

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, dict[str, str | None]]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found.append((tag, dict(attrs)))

    tags = Tags()
    tags.feed(html)
    names = [tag for tag, _ in tags.found]
    assert names.count("svg") >= 4  # bands, time, savings, slow paths (plus legend swatches)
    assert not [a for _, a in tags.found if a.get("src") or a.get("href")]  # nothing external
    for heading in ("Perception bands per path", "Where the time goes", "Savings"):
        assert f"<h2>{heading}</h2>" in html
    assert "14.5 s · 3 of 5" in html


def test_a_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "nope.sqlite"
    assert main(["report", "--sqlite", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"nearline: {missing}: no such request log (is request_log.sqlite_path right?)\n"
    )
    with pytest.raises(SystemExit):
        main(["report", "--since", "yesterday"])


async def test_postgres_request_log(capsys: pytest.CaptureFixture[str], worked_example_rows):
    tenant = f"report-{uuid.uuid4().hex}"
    sink = PostgresSink(POSTGRES_DSN)
    await sink.open()
    try:
        await sink.write(worked_example_rows(tenant=tenant))
        out = report(capsys, "--postgres", POSTGRES_DSN, "--tenant", tenant, "--json")
        figures = json.loads(out)
        assert figures["requests"] == 9
        assert figures["bands"]["no content"] == 2
        assert figures["savings"]["usd_saved"] == pytest.approx(0.004)
        assert [p["name"] for p in figures["slow_paths"]] == [
            "chat.completions · m · inference",
            "chat.completions · n · inference",
        ]
    finally:
        await sink.aclose()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            db.execute(f"DELETE FROM {TABLE} WHERE tenant = %s", (tenant,))


async def test_the_advisor_reads_the_gateway_log_through_the_adapter(
    tmp_path: Path, worked_example_rows
):
    db = tmp_path / "requests.sqlite"
    await write_sqlite(db, worked_example_rows())
    records = list(GatewayRequestLog(LogLocation(sqlite_path=db)).records())
    assert len(records) == 9
    failed = next(r for r in records if r.total_ms == 12_000 and r.source == "inference")
    assert failed.time_to_first_useful_ms == 12_000  # no content: waited the whole time
    assert sum(r.abandoned for r in records) == 1
    assert sum(r.served_from_store for r in records) == 3
    assert {r.route for r in records} == {"chat.completions m", "chat.completions n"}
