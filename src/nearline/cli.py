"""The ``nearline`` command: ``serve``, ``mock-upstream`` and the other faces' subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nearline.core.errors import CommandError, ConfigError

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from nearline.app import create_app
    from nearline.config import load_settings

    server: dict[str, object] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    settings = load_settings(args.config, **({"server": server} if server else {}))
    print(
        f"nearline: serving {', '.join(settings.models)} on "
        f"http://{settings.server.host}:{settings.server.port}/v1 "
        f"(auth {'on' if settings.auth_enabled else 'off: loopback only'})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
    )
    return 0


def _mock_upstream(args: argparse.Namespace) -> int:
    import uvicorn

    from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

    behaviour = MockBehaviour(
        ttft_s=args.ttft_ms / 1000,
        tokens_per_s=args.tokens_per_s,
        completion_tokens=args.tokens,
        error_rate=args.error_rate,
        rate_limit_rate=args.rate_limit_rate,
        disconnect_rate=args.disconnect_rate,
        seed=args.seed,
    )
    print(
        f"nearline mock-upstream: http://{args.host}:{args.port}/v1 {behaviour}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_mock_app(behaviour),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nearline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", type=Path, default=None, help="YAML settings file")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.set_defaults(run=_serve)

    mock = commands.add_parser(
        "mock-upstream", help="run a fake paid OpenAI-compatible provider for tests and benchmarks"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9090)
    mock.add_argument("--ttft-ms", type=float, default=50.0, help="time to first token")
    mock.add_argument("--tokens-per-s", type=float, default=200.0)
    mock.add_argument("--tokens", type=int, default=24, help="tokens per answer")
    mock.add_argument("--error-rate", type=_rate, default=0.0, help="share answered with 500")
    mock.add_argument("--rate-limit-rate", type=_rate, default=0.0, help="share answered 429")
    mock.add_argument(
        "--disconnect-rate", type=_rate, default=0.0, help="share of streams cut half-way"
    )
    mock.add_argument("--seed", type=int, default=0)
    mock.set_defaults(run=_mock_upstream)

    for add_commands in _face_commands():
        add_commands(commands)
    return parser


def _face_commands() -> list[Callable[[Any], None]]:
    """Each face registers its own subcommands (``worker``, ``demo``, ``advise``, ...)."""
    faces: list[Callable[[Any], None]] = []
    # One line per face, e.g.:
    #   from nearline.worker.cli import add_commands as add_stream_commands
    #   faces.append(add_stream_commands)
    from nearline.insights.advise.cli import add_commands as add_advise_commands

    faces.append(add_advise_commands)
    from nearline.training.cli import add_commands as add_routing_commands

    faces.append(add_routing_commands)
    from nearline.worker.cli import add_commands as add_stream_commands

    faces.append(add_stream_commands)
    from nearline.gateway.warm import add_commands as add_warm_commands

    faces.append(add_warm_commands)
    from nearline.insights.report.cli import add_commands as add_report_commands

    faces.append(add_report_commands)
    return faces


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. The one error path: a subcommand raises ``CommandError`` (or
    ``ConfigError``) and this prints it as one line, ``nearline: <message>``, and returns 2."""
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except (CommandError, ConfigError) as exc:
        print(f"nearline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
