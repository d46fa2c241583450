"""``nearline report``: one page of what users felt, from the gateway's request log."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nearline.insights.report.figures import Report, build_report
from nearline.insights.requestlog import LogFilter, LogLocation, read_rows

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="perception bands, where the time goes, savings, abandonment, slow paths",
        description="One page of what users felt, from the gateway's request log "
        "(request_log in the settings, or --sqlite / --postgres). See docs/report.md.",
    )
    parser.add_argument(
        "--config", type=Path, help="settings file whose request_log section names the log"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sqlite", type=Path, help="SQLite request log (overrides --config)")
    where.add_argument("--postgres", metavar="DSN", help="PostgreSQL request log DSN")
    parser.add_argument(
        "--since", type=parse_since, metavar="AGE", help="only the last AGE: 90m, 24h, 7d"
    )
    parser.add_argument("--tenant", help="only this tenant's requests")
    parser.add_argument("--top", type=int, default=5, help="slow paths to list (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML page")
    parser.set_defaults(run=run)


def parse_since(text: str) -> float:
    """``24h`` → 86400.0 seconds (units s, m, h, d, w)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give an age like 90m, 24h or 7d")
    return float(match[1]) * _UNITS_S[match[2]]


def location_from(args: argparse.Namespace) -> LogLocation:
    if args.sqlite is not None:
        return LogLocation(sqlite_path=args.sqlite)
    if args.postgres is not None:
        return LogLocation(postgres_dsn=args.postgres)
    from nearline.config import load_settings

    config = load_settings(args.config).request_log
    return LogLocation(sqlite_path=config.sqlite_path, postgres_dsn=config.postgres_dsn)


def run(args: argparse.Namespace) -> int:
    """An unreadable log raises ``RequestLogError`` (a ``CommandError``) and bad settings
    ``ConfigError``: ``nearline``'s ``main`` prints either as one line and exits 2."""
    since_ts = None if args.since is None else time.time() - args.since
    location = location_from(args)
    rows = read_rows(location, LogFilter(since_ts=since_ts, tenant=args.tenant))
    report = build_report(rows, top=args.top)
    if args.html is not None:
        from nearline.insights.report.html import render_html

        args.html.write_text(render_html(report, location.describe()), encoding="utf-8")
    if args.json:
        print(json.dumps(to_json(report), indent=2, ensure_ascii=False))
    else:
        from nearline.insights.report.text import render_text

        print(render_text(report, location.describe()), end="")
    if args.html is not None:
        print(f"nearline report: wrote {args.html}", file=sys.stderr)
    return 0


def to_json(report: Report) -> dict[str, Any]:
    figures = asdict(report)
    figures["savings"]["cache_share"] = report.savings.cache_share
    figures["endings"]["abandoned_share"] = report.endings.abandoned_share
    figures["endings"]["error_share"] = report.endings.error_share
    if report.preliminary is not None:
        figures["preliminary"]["share"] = report.preliminary.share
    for histogram_bin, figured_bin in zip(report.histogram, figures["histogram"], strict=True):
        figured_bin["label"] = histogram_bin.label
    for path, figured in zip(
        [*report.paths, *report.slow_paths],
        [*figures["paths"], *figures["slow_paths"]],
        strict=True,
    ):
        figured["name"] = path.name
    return figures
