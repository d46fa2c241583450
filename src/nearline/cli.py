"""The ``nearline`` command: ``serve``, ``mock-upstream`` and the other faces' subcommands."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nearline.core.errors import CommandError, ConfigError

if TYPE_CHECKING:
    from nearline.config import Settings

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from nearline.config import load_settings

    server: dict[str, object] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    overrides = {"server": server} if server else {}
    settings = load_settings(args.config, **overrides)
    if args.workers > 1:
        return _serve_workers(settings, args.workers, args.config, overrides)
    return run_gateway(settings)


def run_gateway(settings: Settings, *, note: str = "") -> int:
    """Check what a user can fix in one line (the port, Redis) before loading any model, say
    where the pages are, then serve until interrupted."""
    import uvicorn

    from nearline.app import create_app

    preflight(settings)
    _announce(settings, note)
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
    )
    return 0


def _announce(settings: Settings, note: str = "") -> None:
    root = f"http://{settings.server.host}:{settings.server.port}"
    print(
        f"nearline: serving {', '.join(settings.models)} on {root}/v1 "
        f"(auth {'on' if settings.auth_enabled else 'off: loopback only'})\n"
        f"nearline: chat page {root}/chat · live dashboard {root}/dashboard{note}",
        file=sys.stderr,
        flush=True,
    )


_WORKER_SETTINGS = "_NEARLINE_SERVE_WORKER_ARGS"  # how ``serve --workers`` hands workers on


def _serve_workers(
    settings: Settings, workers: int, config: Path | None, overrides: dict[str, Any]
) -> int:
    """``workers`` gateway processes on one port (uvicorn's supervisor): each loads the same
    settings. Caches, rate limits and budgets are shared only through ``redis.url``;
    without it each worker keeps its own (and /metrics answers for one worker)."""
    import json
    import os

    import uvicorn

    preflight(settings)
    shared = "shared through Redis" if settings.redis.url else "per worker: set redis.url to share"
    _announce(settings, f"\nnearline: {workers} worker processes (caches and limits {shared})")
    os.environ[_WORKER_SETTINGS] = json.dumps(
        {"config": None if config is None else str(config), "overrides": overrides}
    )
    uvicorn.run(
        "nearline.cli:worker_app",
        factory=True,
        workers=workers,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
    )
    return 0


def worker_app() -> Any:
    """One ``serve --workers`` process's app: the settings the command loaded, read again."""
    import json
    import os

    from nearline.app import create_app
    from nearline.config import load_settings

    spec = json.loads(os.environ[_WORKER_SETTINGS])
    config = None if spec["config"] is None else Path(spec["config"])
    return create_app(load_settings(config, **spec["overrides"]))


def preflight(settings: Settings) -> None:
    """What start-up would otherwise fail on after loading every model, as one line each."""
    _check_port(settings.server.host, settings.server.port)
    if settings.redis.url is not None:
        _check_redis(settings.redis.url)


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {port} on {host} is already in use (server.port): stop what "
                    "listens there or pass --port"
                ) from exc
            raise CommandError(
                f"cannot listen on {host}:{port} (server.host, server.port): {exc.strerror or exc}"
            ) from exc


def _check_redis(url: str) -> None:
    from urllib.parse import urlsplit

    import redis

    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CommandError(
            f"cannot reach Redis at {shown} (redis.url): {reason}; start Redis there or "
            "remove redis.url to keep the caches in memory"
        ) from exc
    finally:
        client.close()


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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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
    serve.add_argument(
        "--workers", type=_positive, default=1, help="gateway processes on the port (default 1)"
    )
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
    from nearline.testing.demo_chat import add_chat_demo

    add_chat_demo(_subcommands(commands.choices["demo"]), run_gateway)
    _plain_text(parser)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> Any:
    """The sub-parsers action of ``parser`` (``nearline demo``: each demo adds itself)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _plain_text(parser: argparse.ArgumentParser) -> None:
    """Help without reStructuredText: docstrings reused as help say ``name``; print name."""
    parser.description = _unmarked(parser.description)
    parser.epilog = _unmarked(parser.epilog)
    for action in parser._actions:
        action.help = _unmarked(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = _unmarked(choice.help)
            for sub in dict.fromkeys(action.choices.values()):
                _plain_text(sub)


def _unmarked(text: str | None) -> str | None:
    return None if text is None else text.replace("``", "")


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
