"""``nearline advise``: the decision framework from a profile, a measured request log, or both.

From a log it also mines what can be precomputed (repeated and paraphrased questions, a warm
file, likely follow-ups) and replays the traffic offline under each mitigation (exact and
semantic cache, progressive drafts, a cheaper tier, prefetch), ranked by what they save.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nearline.config import SemanticCacheSettings, load_settings
from nearline.core.errors import CommandError
from nearline.embed import Embedder, EmbedderLoadError, load_embedder
from nearline.insights.advise.advisor import Advice, advise
from nearline.insights.advise.evidence import PathEvidence
from nearline.insights.advise.from_log import overlay
from nearline.insights.advise.profile import Prices, Profile, ProfileError, load_profile
from nearline.insights.advise.render import render_text
from nearline.insights.advise.render_html import render_html
from nearline.insights.advise.render_json import to_json
from nearline.insights.advise.replay import WARM_TOP, with_log_insights
from nearline.insights.advise.requestlog import (
    GatewayRequestLog,
    JsonlRequestLog,
    RequestLogReader,
    RouteMeasurement,
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
        default=None,
        metavar="USD",
        help="cost of a second of delay for paths whose profile does not say it (absent: "
        "derived from the log's abandonment; interactive paths are then never batch)",
    )
    parser.add_argument(
        "--lost-request-cost",
        type=float,
        default=None,
        metavar="USD",
        help="what one abandoned request costs (prices the derived delay cost; absent: its "
        "measured spend, a lower bound)",
    )
    parser.add_argument(
        "--similarity",
        type=float,
        default=SemanticCacheSettings().hit_threshold,
        help="cosine similarity at which two questions are one (default: the semantic "
        "cache's hit_threshold, %(default)s)",
    )
    parser.add_argument(
        "--warm-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the most asked questions for `nearline warm PATH`",
    )
    parser.add_argument("--warm-top", type=int, default=WARM_TOP, help="questions in the warm file")
    parser.add_argument(
        "--no-embed",
        action="store_true",
        help="cluster identical wording only (no embedding model)",
    )
    parser.add_argument(
        "--format", choices=("text", "json", "html"), default="text", help="output format"
    )
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        type=_price,
        metavar="NAME=VALUE",
        help=f"override a price ({', '.join(Prices.model_fields)})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the gateway's settings: its plan models (provider plan:NAME) are plan-and-execute "
        "candidates even where the log's rows do not carry their calls",
    )
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Unusable input raises ``CommandError`` (``RequestLogError`` is one): ``nearline``'s
    ``main`` prints it as one line and exits 2."""
    if args.profile is None and args.log is None and args.postgres is None:
        raise CommandError("give a profile, --log/--postgres, or both")
    try:
        profile, evidence, measurements = _profile(args)
    except ProfileError as exc:
        raise CommandError(str(exc)) from exc
    advice = advise(profile, evidence)
    if measurements:
        advice = with_log_insights(
            advice,
            measurements,
            embedder=None if args.no_embed else _embedder(),
            threshold=args.similarity,
            warm_file=args.warm_file,
            warm_top=args.warm_top,
            plan_models=_plan_models(args.config),
        )
    _print(advice, "json" if args.json else args.format)
    return 0


def _plan_models(config: Path | None) -> frozenset[str]:
    """The catalogue models of ``config`` that are plans."""
    if config is None:
        return frozenset()
    models = load_settings(config).models
    return frozenset(name for name, route in models.items() if route.provider.startswith("plan:"))


def _print(advice: Advice, output: str) -> None:
    if output == "json":
        print(json.dumps(to_json(advice), indent=2))
    elif output == "html":
        print(render_html(to_json(advice)), end="")
    else:
        print(render_text(advice), end="")


def _embedder() -> Embedder | None:
    """The local MiniLM model; without it questions cluster by identical wording only."""
    try:
        return load_embedder()
    except EmbedderLoadError:
        return None


def _profile(
    args: argparse.Namespace,
) -> tuple[Profile, dict[str, PathEvidence], dict[str, RouteMeasurement]]:
    from_log = args.log is not None or args.postgres is not None
    profile = None if args.profile is None else load_profile(args.profile, partial=from_log)
    evidence: dict[str, PathEvidence] = {}
    measurements: dict[str, RouteMeasurement] = {}
    if from_log:
        reader, name = _log_reader(args)
        measurements = measure_routes(reader.records())
        if not measurements:
            raise RequestLogError(f"{name}: no records")
        profile, evidence = overlay(
            measurements,
            profile,
            name=f"request log {name}",
            delay_cost_per_second_usd=args.delay_cost_per_second,
            lost_request_cost_usd=args.lost_request_cost,
        )
    assert profile is not None
    if args.price:
        profile = profile.with_prices(dict(args.price))
    return profile, evidence, measurements


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
