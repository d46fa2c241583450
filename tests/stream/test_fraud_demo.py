"""The fraud demo: labelled generator, streaming features, a real model, the command itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nearline.testing.worker import running
from nearline.worker.broker import Entry, Message
from nearline.worker.demo.fraud.features import FEATURE_NAMES
from nearline.worker.demo.fraud.generator import GeneratorSettings, TransactionGenerator
from nearline.worker.demo.fraud.handler import FraudHandler
from nearline.worker.demo.fraud.model import FraudModel, labelled_features, train
from nearline.worker.memory import MemoryBroker
from nearline.worker.pipeline import Pipeline
from nearline.worker.state import MemoryWindowState
from nearline.worker.worker import Worker

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "fraud.joblib"
    train(count=30_000, seed=3).save(path)
    return path


def test_the_generator_is_reproducible_and_labels_a_small_share_as_fraud() -> None:
    first = TransactionGenerator(GeneratorSettings(seed=11)).take(20_000, 0, 500.0)
    again = TransactionGenerator(GeneratorSettings(seed=11)).take(20_000, 0, 500.0)

    assert first == again
    share = sum(tx["is_fraud"] for tx in first) / len(first)
    assert 0.005 < share < 0.05
    assert [tx["at_ms"] for tx in first] == sorted(tx["at_ms"] for tx in first)


def test_fraud_bursts_show_in_the_card_window_features() -> None:
    features, labels = labelled_features(20_000, seed=5)
    burst = FEATURE_NAMES.index("card_tx_last_minute")

    assert features[labels == 1, burst].mean() > 1.5 * features[labels == 0, burst].mean()


def test_the_model_catches_fraud_it_never_saw_and_survives_save_and_load(
    model_file: Path,
) -> None:
    model = FraudModel.load(model_file)
    features, labels = labelled_features(20_000, seed=99)  # a different world than training

    scores = model.fraud_probability(features)

    assert roc_auc_score(labels, scores) > 0.95
    reloaded = FraudModel.load(model_file)
    assert np.array_equal(reloaded.fraud_probability(features[:500]), scores[:500])
    assert model.report.roc_auc > 0.95  # measured on held-out data at training time


@pytest.fixture
async def memory_broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    await broker.aclose()


async def test_the_pipeline_stops_a_card_being_drained_and_lets_normal_spending_through(
    model_file: Path, memory_broker: MemoryBroker
) -> None:
    handler = FraudHandler(FraudModel.load(model_file), MemoryWindowState(60_000))
    normal = {"card_country": "US", "country": "US", "merchant": "groceries"}
    drained = {"card_country": "US", "country": "RO", "merchant": "electronics"}
    transactions = [
        {**normal, "tx_id": f"n{i}", "card": f"card-{i}", "amount": 25.0 + i, "at_ms": i * 1000}
        for i in range(20)
    ] + [
        {
            **drained,
            "tx_id": f"f{i}",
            "card": "card-stolen",
            "amount": 900.0 + 50 * i,
            "at_ms": 20_000 + i * 2000,
            "is_fraud": True,
        }
        for i in range(6)
    ]
    entries = [Entry(f"{i + 1}-0", tx) for i, tx in enumerate(transactions)]

    decisions = await handler(entries)

    assert all(d is not None for d in decisions)
    normal_decisions = [d["decision"] for d in decisions[:20] if d is not None]
    stolen_decisions = [d["decision"] for d in decisions[20:] if d is not None]
    assert normal_decisions.count("allow") >= 19
    assert stolen_decisions[-3:] == ["block"] * 3, stolen_decisions
    assert [d["card_tx_last_minute"] for d in decisions[20:] if d is not None] == [1, 2, 3, 4, 5, 6]


async def test_the_worker_decides_every_transaction_once(
    model_file: Path, memory_broker: MemoryBroker
) -> None:
    handler = FraudHandler(FraudModel.load(model_file), MemoryWindowState(60_000))
    pipeline = Pipeline("fraud", "tx", handler, results="decisions", max_batch=200, window_ms=20)
    worker = Worker(memory_broker, [pipeline])
    transactions = TransactionGenerator(GeneratorSettings(seed=4)).take(1_000, 0, 500.0)
    await memory_broker.publish("tx", [Message(tx) for tx in transactions])

    async with running(worker):
        info = await memory_broker.group_info("tx", "fraud")
        while info.lag or info.pending:
            await asyncio.sleep(0.05)
            info = await memory_broker.group_info("tx", "fraud")

    assert await memory_broker.length("decisions") == 1_000
    decided: list[Entry] = []
    async with asyncio.timeout(5):
        async for entry in memory_broker.tail("decisions", "0"):
            decided.append(entry)
            if len(decided) == 1_000:
                break
    assert sorted(d.data["tx_id"] for d in decided) == sorted(t["tx_id"] for t in transactions)
    assert {d.data["decision"] for d in decided} <= {"allow", "flag", "block"}
    caught = sum(1 for d in decided if d.data["is_fraud"] and d.data["decision"] != "allow")
    assert caught >= 0.5 * sum(1 for t in transactions if t["is_fraud"])


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--redis"]], ids=["in-process", "redis"])
def test_the_demo_command_runs_and_decides_everything_it_produced(
    model_file: Path, flags: list[str]
) -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; from nearline.cli import main; sys.exit(main())",
        "demo",
        "fraud",
        "--duration",
        "1",
        "--rate",
        "600",
        "--port",
        "0",
        "--model",
        str(model_file),
        *flags,
    ]

    finished = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    assert finished.returncode == 0, finished.stderr
    summary = finished.stdout.strip().splitlines()[-1]
    assert summary.startswith("nearline demo fraud: done:")
    assert "'decided': " in summary
    produced = int(summary.split("'produced': ")[1].split(",")[0])
    decided = int(summary.split("'decided': ")[1].split(",")[0])
    assert produced > 300
    assert decided == produced


async def test_a_second_redis_run_starts_from_fresh_card_state() -> None:
    """Issue 14 point 9: two ``--redis`` runs within the card window do not share state."""
    import time

    import redis.asyncio as redis

    from nearline.worker.demo.fraud.run import STATE_PREFIX, DemoOptions, open_parts
    from nearline.worker.state import WindowUpdate

    url = "redis://127.0.0.1:6379/0"
    now_ms = int(time.time() * 1000)
    counts = []
    for run in range(2):
        broker, state = await open_parts(DemoOptions(redis_url=url))
        try:
            (stats,) = await state.add([WindowUpdate("card-00001", f"tx-{run}", now_ms, 10.0)])
            counts.append(stats.count)
        finally:
            await state.aclose()
            await broker.aclose()

    assert counts == [1, 1]
    client = redis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=f"{STATE_PREFIX}*card-00001*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_the_configured_handler_trains_its_model_on_first_use(tmp_path: Path) -> None:
    """Issue 14 point 9: the quick start's ``options: {model_path: ...}`` works on a fresh
    install (the file did not exist: ``FileNotFoundError`` before)."""
    from nearline.worker.demo.fraud.handler import build_handler

    path = tmp_path / "models" / "fraud-model.joblib"
    handler = build_handler(str(path), train_transactions=20_000)

    assert path.exists()
    assert handler.model.report.transactions == 20_000
    again = build_handler(str(path), train_transactions=20_000)  # loaded, not trained again
    assert np.array_equal(
        again.model.fraud_probability(np.zeros((1, len(FEATURE_NAMES)))),
        handler.model.fraud_probability(np.zeros((1, len(FEATURE_NAMES)))),
    )
