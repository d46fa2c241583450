"""``nearline demo fraud``: producer → stream → worker (features + model) → decisions → page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI
from starlette.responses import HTMLResponse, JSONResponse, Response

from nearline.core.http import install_error_handlers
from nearline.worker.broker import Broker, Message, StreamBound, StreamFull, publish_patiently
from nearline.worker.demo.fraud.features import CARD_WINDOW_MS, FEATURE_NAMES
from nearline.worker.demo.fraud.generator import GeneratorSettings, TransactionGenerator
from nearline.worker.demo.fraud.handler import FraudHandler
from nearline.worker.demo.fraud.model import FraudModel, load_or_train
from nearline.worker.demo.fraud.page import render_page
from nearline.worker.demo.fraud.scoreboard import Scoreboard
from nearline.worker.memory import MemoryBroker
from nearline.worker.pipeline import Pipeline
from nearline.worker.push import create_push_router
from nearline.worker.state import MemoryWindowState, RedisWindowState, WindowState
from nearline.worker.worker import Worker, WorkerOptions

TRANSACTIONS = "nearline-demo:fraud:transactions"
DECISIONS = "nearline-demo:fraud:decisions"
STATE_PREFIX = "nearline-demo:fraud:card:"  # then a run's own id, then the card
SOURCE_BOUND = 50_000
_TICK_S = 0.02


@dataclass(frozen=True)
class DemoOptions:
    rate: float = 200.0
    duration_s: float | None = None
    window_ms: int = 100
    max_batch: int = 1000
    model_path: Path = Path.home() / ".cache" / "nearline" / "fraud-model.joblib"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8090
    seed: int = 7


def run_fraud_demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        rate=args.rate,
        duration_s=args.duration,
        window_ms=args.window_ms,
        max_batch=args.max_batch,
        model_path=args.model,
        redis_url=args.redis_url if args.redis else None,
        host=args.host,
        port=args.port,
        seed=args.seed,
    )
    return asyncio.run(run_demo(options))


async def open_parts(options: DemoOptions) -> tuple[Broker, WindowState]:
    bound = StreamBound(per_stream={TRANSACTIONS: SOURCE_BOUND})
    if options.redis_url is None:
        return MemoryBroker(bound), MemoryWindowState(CARD_WINDOW_MS)
    from nearline.worker.redis_streams import RedisStreamsBroker

    broker = RedisStreamsBroker.from_url(options.redis_url, bound)
    await broker.delete(TRANSACTIONS, DECISIONS)  # a fresh scoreboard for each run
    # and fresh card state: the generator replays the same cards, and the last run's windows
    # live on in Redis for two minutes (they expire by themselves)
    prefix = f"{STATE_PREFIX}{uuid.uuid4().hex[:12]}:"
    return broker, RedisWindowState.from_url(options.redis_url, prefix, CARD_WINDOW_MS)


async def produce(
    broker: Broker, options: DemoOptions, board: Scoreboard, stop: asyncio.Event
) -> None:
    """Publish transactions at ``options.rate``, in real time, obeying backpressure."""
    generator = TransactionGenerator(GeneratorSettings(seed=options.seed))
    transactions = generator.stream(int(time.time() * 1000), options.rate)
    upcoming = next(transactions)
    while not stop.is_set():
        now_ms = time.time() * 1000
        due: list[Message] = []
        while upcoming["at_ms"] <= now_ms:
            due.append(Message(upcoming))
            upcoming = next(transactions)
        if due:
            try:
                await publish_patiently(broker, TRANSACTIONS, due, stop=stop)
            except StreamFull:
                return
            board.produced += len(due)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _TICK_S)


async def watch(broker: Broker, board: Scoreboard) -> None:
    async for entry in broker.tail(DECISIONS, "0"):
        board.add(entry)


def create_demo_app(broker: Broker, board: Scoreboard, stop: asyncio.Event) -> FastAPI:
    app = FastAPI(title="nearline fraud demo", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    stream_url = f"/v1/streams/{DECISIONS}/events"

    @app.get("/")
    async def page() -> Response:
        return HTMLResponse(render_page(stream_url))

    @app.get("/demo/stats")
    async def stats() -> Response:
        return JSONResponse(board.snapshot())

    app.include_router(create_push_router(broker, [DECISIONS], stop=stop))
    return app


async def run_demo(options: DemoOptions) -> int:
    model, trained = await asyncio.to_thread(load_or_train, options.model_path)
    _say_model(model, options.model_path, trained)
    await asyncio.to_thread(model.fraud_probability, np.zeros((1, len(FEATURE_NAMES))))  # warm
    broker, state = await open_parts(options)
    board = Scoreboard()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    handler = FraudHandler(model, state)
    pipeline = Pipeline(
        "fraud",
        TRANSACTIONS,
        handler,
        results=DECISIONS,
        max_batch=options.max_batch,
        window_ms=options.window_ms,
    )
    worker = Worker(broker, [pipeline], WorkerOptions(consumer_name="demo"))
    server = None
    if options.port:
        server = uvicorn.Server(
            uvicorn.Config(
                create_demo_app(broker, board, stop),
                host=options.host,
                port=options.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="websockets-sansio",
                timeout_graceful_shutdown=2,
            )
        )
    print(
        f"nearline demo fraud: {options.rate:g} tx/s on the "
        f"{'Redis' if options.redis_url else 'in-process'} broker, window {options.window_ms} ms"
        + (f"; live page on http://{options.host}:{options.port}/" if server else ""),
        flush=True,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            working = tasks.create_task(worker.run())
            watching = tasks.create_task(watch(broker, board))
            serving = tasks.create_task(server.serve()) if server else None
            await worker.started.wait()
            tasks.create_task(produce(broker, options, board, stop))
            tasks.create_task(_report_every(board, 5.0, stop))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.duration_s)
            stop.set()
            await _drain(broker, board, timeout_s=max(2.0, options.window_ms / 1000 * 5))
            worker.stop()
            await working
            watching.cancel()
            if server is not None and serving is not None:
                server.should_exit = True
    finally:
        await handler.aclose()
        await broker.aclose()
    summary = board.snapshot()
    print(f"nearline demo fraud: done: {summary}", flush=True)
    return 0


async def _drain(broker: Broker, board: Scoreboard, timeout_s: float) -> None:
    """Give the worker a moment to decide what was already produced."""
    deadline = time.monotonic() + timeout_s
    while (  # noqa: ASYNC110 - polls a counter other tasks advance
        board.snapshot()["decided"] < board.produced and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)


async def _report_every(board: Scoreboard, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        snapshot = board.snapshot()
        latency = snapshot["latency_ms"]
        print(
            f"  produced {snapshot['produced']}, decided {snapshot['decided']} "
            f"({snapshot['per_second']}/s), {snapshot['decisions']}, "
            f"latency p50 {latency['p50']} ms p99 {latency['p99']} ms, "
            f"precision {snapshot['precision']} recall {snapshot['recall']}",
            flush=True,
        )


def _say_model(model: FraudModel, path: Path, trained: bool) -> None:
    report = model.report
    action = "trained and saved to" if trained else "loaded from"
    print(
        f"nearline demo fraud: model {action} {path} ({report.transactions} transactions, "
        f"{report.fraud_share:.1%} fraud; held-out ROC AUC {report.roc_auc:.3f}, "
        f"average precision {report.average_precision:.3f})",
        file=sys.stderr,
        flush=True,
    )
