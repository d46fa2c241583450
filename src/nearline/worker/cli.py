"""``nearline worker`` and ``nearline demo``: the event worker's subcommands.

``nearline worker`` exits with a code that says how it ended (docs/worker.md):

* 0 — stopped by SIGTERM/SIGINT, every batch in hand finished;
* 2 — a configuration or usage error, nothing ran;
* 3 — a task of the worker failed with an unexpected error (logged with its traceback);
* 4 — stopped by a signal, but batches in hand did not finish within ``shutdown_grace_ms``:
  they were abandoned, their entries given back for redelivery,
  and the process exited without waiting for a hung handler's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("nearline.worker")

EXIT_STOPPED = 0
EXIT_CRASHED = 3
EXIT_ABANDONED = 4


def add_commands(commands: Any) -> None:
    worker = commands.add_parser(
        "worker", help="run event pipelines: streams in, micro-batched handlers, results out"
    )
    worker.add_argument("--config", type=Path, default=None, help="YAML settings file")
    worker.add_argument(
        "--broker",
        choices=["memory", "redis", "rabbitmq", "kafka"],
        default=None,
        help="override worker.broker",
    )
    worker.add_argument(
        "--dedupe",
        choices=["memory", "redis"],
        default=None,
        help="override worker.dedupe: where RabbitMQ's dedupe keys of results live "
        "(default redis when redis.url is set)",
    )
    worker.add_argument(
        "--consumer", default=None, help="consumer name in each group (default <hostname>-<pid>)"
    )
    worker.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="also serve /metrics, /healthz and the results push API on this port",
    )
    worker.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    worker.set_defaults(run=_run_worker)

    demo = commands.add_parser("demo", help="runnable demonstrations")
    demos = demo.add_subparsers(dest="demo", required=True)
    from nearline.worker.demo.cli import add_fraud_command

    add_fraud_command(demos)


def _run_worker(args: argparse.Namespace) -> int:
    from nearline.config import load_settings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    worker: dict[str, object] = {}
    if args.broker is not None:
        worker["broker"] = args.broker
    if args.consumer is not None:
        worker["consumer_name"] = args.consumer
    if args.dedupe is not None:
        worker["dedupe"] = args.dedupe
    settings = load_settings(args.config)  # a ConfigError is reported by nearline.cli.main
    if worker:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})
    return asyncio.run(_serve_worker(settings, args.http_port))


async def _serve_worker(settings: Any, http_port: int | None) -> int:
    from nearline.core.errors import ConfigError
    from nearline.worker.build import build_pipelines, close_handlers, open_broker
    from nearline.worker.worker import Worker, WorkerCrashed, WorkerOptions

    pipelines = build_pipelines(settings.worker)
    if not pipelines:
        raise ConfigError("worker.pipelines: no pipeline to run; declare at least one")
    broker = await open_broker(settings)
    _tune_garbage_collector()
    options = WorkerOptions(
        consumer_name=settings.worker.consumer_name or "",
        reclaim_idle_ms=settings.worker.reclaim_idle_ms,
        dead_consumer_retention_s=settings.worker.dead_consumer_retention_s,
        shutdown_grace_s=settings.worker.shutdown_grace_ms / 1000,
        output_full_wait_s=settings.worker.output_full_wait_ms / 1000,
    )
    worker = Worker(broker, pipelines, options)
    loop = asyncio.get_running_loop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    print(
        f"nearline worker: {settings.worker.broker} broker, pipelines "
        + ", ".join(f"{p.name} ({p.source} -> {p.results or '-'})" for p in pipelines),
        file=sys.stderr,
        flush=True,
    )
    code = EXIT_STOPPED
    try:
        if http_port is None:
            await worker.run()
        else:
            from nearline.worker.server import serve_with_worker

            await serve_with_worker(worker, settings, http_port)
    except WorkerCrashed as crash:  # the failing task was logged with its traceback
        logger.error("nearline worker: %s; exiting with code %d", crash, EXIT_CRASHED)  # noqa: TRY400
        code = EXIT_CRASHED
    finally:
        if worker.abandoned:
            code = EXIT_ABANDONED if code == EXIT_STOPPED else code
        if not worker.abandoned:  # an abandoned handler may hold what closing needs
            await close_handlers(pipelines)
        try:
            await asyncio.wait_for(broker.aclose(), 5)
        except Exception as exc:  # noqa: BLE001 - exiting anyway: say so, keep the exit code
            logger.warning("nearline worker: closing the broker failed: %r", exc)
    if worker.abandoned or worker.hung_handler_threads:
        logger.warning(
            "nearline worker: exiting with code %d without waiting for %d hung handler thread(s)",
            code,
            worker.hung_handler_threads,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # a thread cannot be killed, and the interpreter would wait for it
    return code


def _tune_garbage_collector() -> None:
    """A worker allocates a few objects per event for hours; its start-up objects (models,
    handlers) never die. Freeze those out of the collector's scans and collect the young
    generation less often: in a profile of the fraud pipeline, collection took a third of the
    worker's Python time before this."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(20_000, older, oldest)
