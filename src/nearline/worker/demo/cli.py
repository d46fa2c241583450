"""``nearline demo fraud``: subcommand registration (the demo itself loads lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_MODEL_PATH = Path.home() / ".cache" / "nearline" / "fraud-model.joblib"


def add_fraud_command(demos: Any) -> None:
    fraud = demos.add_parser(
        "fraud",
        help="score synthetic card transactions live with a trained model and streaming features",
    )
    fraud.add_argument(
        "--redis",
        action="store_true",
        help="use Redis (redis.url, default redis://127.0.0.1:6379/0) for the "
        "streams and the per-card state instead of the in-process broker",
    )
    fraud.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    fraud.add_argument("--rate", type=float, default=200.0, help="transactions per second")
    fraud.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    fraud.add_argument("--window-ms", type=int, default=100, help="micro-batch window")
    fraud.add_argument("--max-batch", type=int, default=1000)
    fraud.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL_PATH,
        help="model file: trained and saved here when missing, loaded otherwise "
        "(default ~/.cache/nearline/fraud-model.joblib)",
    )
    fraud.add_argument("--host", default="127.0.0.1")
    fraud.add_argument("--port", type=int, default=8090, help="live page port (0: no page)")
    fraud.add_argument("--seed", type=int, default=7)
    fraud.set_defaults(run=_run_fraud)


def _run_fraud(args: argparse.Namespace) -> int:
    from nearline.worker.demo.fraud.run import run_fraud_demo

    return run_fraud_demo(args)
