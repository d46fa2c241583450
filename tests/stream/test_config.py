"""The worker's settings: pipelines from config, handlers by name, errors a user can act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nearline.config import load_settings
from nearline.config.worker import WorkerSettings
from nearline.core.errors import ConfigError
from nearline.worker.broker import Entry
from nearline.worker.build import build_pipelines, open_broker
from nearline.worker.handlers import HandlerRegistry
from nearline.worker.pipeline import Result

_CLI = "import sys; from nearline.cli import main; sys.exit(main())"


def test_pipelines_come_from_config_with_handlers_filters_and_factories() -> None:
    settings = load_settings(
        worker={
            "pipelines": [
                {
                    "name": "echo",
                    "source": "in",
                    "handler": "nearline.testing.worker:echo",
                    "filter": "nearline.testing.worker:raise_on_poison",
                    "results": "out",
                    "max_batch": 7,
                    "window_ms": 0,
                },
                {
                    "name": "slow",
                    "source": "in",
                    "handler": "nearline.testing.worker:slow_echo",
                    "options": {"delay_ms": 1},
                },
            ]
        }
    )

    echo, slow = build_pipelines(settings.worker)

    assert (echo.name, echo.source, echo.results, echo.max_batch, echo.window_ms) == (
        "echo",
        "in",
        "out",
        7,
        0,
    )
    assert echo.group_name == "echo"
    assert echo.dead_letter_stream == "in:dead"
    assert slow.handler([Entry("1-0", {"n": 1})])[0]["n"] == 1  # type: ignore[index,operator]


def test_a_handler_registered_by_decorator_is_found_by_name() -> None:
    registry = HandlerRegistry()

    @registry.register("double")
    def double(batch: list[Entry]) -> list[Result]:
        return [{"n": 2 * e.data["n"]} for e in batch]

    worker = WorkerSettings(pipelines=[{"name": "d", "source": "s", "handler": "double"}])  # type: ignore[list-item]
    (pipeline,) = build_pipelines(worker, registry)
    assert pipeline.handler is double


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("nowhere", "not registered"),
        ("nearline.no_such_module:f", "cannot import"),
        ("nearline.testing.worker:nothing", "has no 'nothing'"),
    ],
)
def test_an_unknown_handler_is_a_config_error_naming_the_pipeline(
    handler: str, message: str
) -> None:
    settings = load_settings(
        worker={"pipelines": [{"name": "broken", "source": "s", "handler": handler}]}
    )

    with pytest.raises(ConfigError, match=message) as error:
        build_pipelines(settings.worker)
    assert "worker.pipelines.broken" in str(error.value)


def test_unknown_worker_keys_and_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"worker.pipelines.0.max_batch"):
        load_settings(
            worker={"pipelines": [{"name": "p", "source": "s", "handler": "h", "max_batch": 0}]}
        )
    with pytest.raises(ConfigError, match=r"worker.brokr: unknown key"):
        load_settings(worker={"brokr": "redis"})


async def test_the_redis_broker_needs_a_redis_url() -> None:
    with pytest.raises(ConfigError, match=r"redis\.url"):
        await open_broker(load_settings(worker={"broker": "redis"}))


def test_nearline_worker_without_pipelines_exits_2_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"worker": {"broker": "memory"}}))

    finished = subprocess.run(
        [sys.executable, "-c", _CLI, "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 2
    assert "worker.pipelines" in finished.stderr


def test_a_handler_from_an_installed_packages_entry_point_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import EntryPoint

    import nearline.worker.handlers as registry_module

    point = EntryPoint("echo-plugin", "nearline.testing.worker:echo", "nearline.handlers")

    def installed(*, group: str, name: str) -> list[EntryPoint]:
        return [point] if (group, name) == ("nearline.handlers", "echo-plugin") else []

    monkeypatch.setattr(registry_module, "entry_points", installed)
    worker = WorkerSettings(pipelines=[{"name": "e", "source": "s", "handler": "echo-plugin"}])  # type: ignore[list-item]

    (pipeline,) = build_pipelines(worker, HandlerRegistry())

    from nearline.testing.worker import echo

    assert pipeline.handler is echo


def test_deadline_grace_and_output_wait_come_from_config() -> None:
    settings = load_settings(
        worker={
            "shutdown_grace_ms": 2500,
            "output_full_wait_ms": 700,
            "pipelines": [
                {"name": "a", "source": "s", "handler": "nearline.testing.worker:echo"},
                {
                    "name": "b",
                    "source": "s",
                    "handler": "nearline.testing.worker:echo",
                    "handler_timeout_ms": 250,
                },
                {
                    "name": "c",
                    "source": "s",
                    "handler": "nearline.testing.worker:echo",
                    "handler_timeout_ms": None,
                },
            ],
        }
    )

    a, b, c = build_pipelines(settings.worker)

    assert (a.handler_timeout_ms, b.handler_timeout_ms, c.handler_timeout_ms) == (60_000, 250, None)
    assert (settings.worker.shutdown_grace_ms, settings.worker.output_full_wait_ms) == (2500, 700)
    with pytest.raises(ConfigError, match=r"worker.pipelines.0.handler_timeout_ms"):
        load_settings(
            worker={
                "pipelines": [{"name": "p", "source": "s", "handler": "h", "handler_timeout_ms": 0}]
            }
        )
