"""Optional extras: code that needs one imports it only when used, and says which to install.

Each test makes one extra's package unimportable (``sys.modules[name] = None`` is what Python
does for a module it cannot import), so they run on the dev install that has them all.
"""

from __future__ import annotations

import sys

import pytest

from nearline.cli import main
from nearline.config import load_settings
from nearline.core.errors import CommandError, ConfigError
from nearline.core.extras import MissingExtra, missing_extra


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` unimportable, and forget nearline modules that imported them."""
    for name in list(sys.modules):
        if name.startswith("nearline.worker.rabbitmq"):
            monkeypatch.delitem(sys.modules, name)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_a_missing_extra_is_one_line_naming_it() -> None:
    error = missing_extra(
        "postgres", "request_log.postgres_dsn", ModuleNotFoundError(name="psycopg")
    )

    assert isinstance(error, ConfigError)
    assert isinstance(error, CommandError)
    assert str(error) == (
        "request_log.postgres_dsn needs pip install 'nearline[postgres]' (psycopg is not installed)"
    )


def test_a_missing_module_of_no_extra_is_not_disguised() -> None:
    bug = ModuleNotFoundError("No module named 'nearline.nope'", name="nearline.nope")

    with pytest.raises(ModuleNotFoundError) as raised:
        missing_extra("postgres", "request_log.postgres_dsn", bug)
    assert raised.value is bug


def test_the_postgres_request_log_without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    from nearline.gateway.telemetry.requestlog import PostgresSink

    hide(monkeypatch, "psycopg")

    with pytest.raises(
        MissingExtra, match=r"request_log.postgres_dsn needs .*nearline\[postgres\]"
    ):
        PostgresSink("postgresql://postgres@127.0.0.1:5432/postgres")


def test_report_on_postgres_without_psycopg(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "psycopg")

    assert main(["report", "--postgres", "postgresql://postgres@127.0.0.1:5432/postgres"]) == 2
    assert capsys.readouterr().err == (
        "nearline: reading the PostgreSQL request log needs pip install 'nearline[postgres]' "
        "(psycopg is not installed)\n"
    )


async def test_the_rabbitmq_broker_without_aio_pika(monkeypatch: pytest.MonkeyPatch) -> None:
    from nearline.worker.build import open_broker

    hide(monkeypatch, "aio_pika")

    with pytest.raises(
        MissingExtra, match=r"worker.broker: 'rabbitmq' needs .*nearline\[rabbitmq\]"
    ):
        await open_broker(load_settings(None), "rabbitmq")


def test_the_fraud_demo_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    from nearline.worker.demo.fraud.model import train

    hide(monkeypatch, "sklearn", "sklearn.ensemble")

    with pytest.raises(MissingExtra, match=r"nearline demo fraud needs .*nearline\[demo\]"):
        train(count=200)
