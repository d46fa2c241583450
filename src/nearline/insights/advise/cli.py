"""``nearline advise``: the decision framework from a profile, a measured request log, or both."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nearline.core.errors import CommandError
from nearline.insights.advise.advisor import advise
from nearline.insights.advise.from_log import profile_from_log
from nearline.insights.advise.profile import Prices, Profile, ProfileError, load_profile
from nearline.insights.advise.render import render_text, to_json
from nearline.insights.advise.requestlog import (
    GatewayRequestLog,
    JsonlRequestLog,
    RequestLogReader,
    measure_routes,
)
from nearline.insights.requestlog import LogLocation, RequestLogError


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "advise",
        help="real-time, near-real-time or batch per path: bands, costs, reliability",
        description=__doc__,
    )
    parser.add_argument("profile", type=Path, nargs="?", help="use-case profile (YAML or JSON)")
    parser.add_argument(
        "--log",
        type=Path,
        help="measured request log: the gateway's SQLite log (.sqlite/.db) or a JSONL of records",
    )
    parser.add_argument(
        "--postgres", metavar="DSN", help="read the gateway's request log from PostgreSQL"
    )
    parser.add_argument(
        "--delay-cost-per-second",
        type=float,
        default=0.0,
        metavar="USD",
        help="cost of a second of delay for routes in the log that the profile lacks",
    )
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        type=_price,
        metavar="NAME=VALUE",
        help=f"override a price ({', '.join(Prices.model_fields)})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Unusable input raises ``CommandError`` (``RequestLogError`` is one): ``nearline``'s
    ``main`` prints it as one line and exits 2."""
    if args.profile is None and args.log is None and args.postgres is None:
        raise CommandError("give a profile, --log/--postgres, or both")
    try:
        profile = _profile(args)
    except ProfileError as exc:
        raise CommandError(str(exc)) from exc
    advice = advise(profile)
    if args.json:
        print(json.dumps(to_json(advice), indent=2))
    else:
        print(render_text(advice), end="")
    return 0


def _profile(args: argparse.Namespace) -> Profile:
    profile = None if args.profile is None else load_profile(args.profile)
    if args.log is not None or args.postgres is not None:
        reader, name = _log_reader(args)
        measurements = measure_routes(reader.records())
        if not measurements:
            raise RequestLogError(f"{name}: no records")
        profile = profile_from_log(
            measurements,
            profile,
            name=f"request log {name}",
            delay_cost_per_second_usd=args.delay_cost_per_second,
        )
    assert profile is not None
    return profile.with_prices(dict(args.price)) if args.price else profile


def _log_reader(args: argparse.Namespace) -> tuple[RequestLogReader, str]:
    """The gateway's own log (SQLite file or PostgreSQL), or a JSONL file of records."""
    if args.postgres is not None:
        return GatewayRequestLog(LogLocation(postgres_dsn=args.postgres)), "PostgreSQL"
    path: Path = args.log
    if path.suffix in (".sqlite", ".sqlite3", ".db"):
        return GatewayRequestLog(LogLocation(sqlite_path=path)), path.name
    return JsonlRequestLog(path), path.name


def _price(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in Prices.model_fields:
        raise argparse.ArgumentTypeError(f"unknown price {name!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a number") from None
