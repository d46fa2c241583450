"""Errors a user can act on: one line on stderr, exit 2, no traceback (issue 15), from real
``nearline`` subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nearline.cli import build_parser
from nearline.config import load_settings
from nearline.core.errors import ConfigError


def nearline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nearline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nearline: ")
    return lines[0]


def test_a_port_in_use_is_named_before_any_model_loads(tmp_path: Path):
    # The local model points at a file that is no model: had start-up loaded it before
    # checking the port, it would fail on the model, not name the port.
    not_a_model = tmp_path / "not-a-model.gguf"
    not_a_model.write_bytes(b"not a gguf file")
    config = tmp_path / "c.yaml"
    config.write_text(f"local: {{model_path: '{not_a_model}'}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(nearline("serve", "--config", str(config), "--port", str(port)))
    assert f"port {port}" in line and "in use" in line and "--port" in line


def test_an_unreachable_redis_names_redis_url(tmp_path: Path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens once closed
    config = tmp_path / "c.yaml"
    config.write_text(f"redis: {{url: 'redis://127.0.0.1:{port}/0'}}\n")
    line = one_line(nearline("serve", "--config", str(config), "--port", "0"))
    assert "redis.url" in line and f"127.0.0.1:{port}" in line


@pytest.mark.parametrize("command", ["report", "advise"])
def test_a_missing_request_log_is_one_line(command: str, tmp_path: Path):
    missing = tmp_path / "nowhere.sqlite"
    args = ["report", "--sqlite", str(missing)] if command == "report" else []
    if command == "advise":
        args = ["advise", "--log", str(missing)]
    line = one_line(nearline(*args))
    assert "nowhere.sqlite" in line


@pytest.mark.parametrize(
    ("yaml", "hint"),
    [
        ("sever: {port: 9000}\n", "sever: unknown key (did you mean `server`?)"),
        ("server: {prot: 9000}\n", "server.prot: unknown key (did you mean `port`?)"),
        (
            "models: {m: {provider: local, upstrem_model: x}}\n",
            "models.m.upstrem_model: unknown key (did you mean `upstream_model`?)",
        ),
    ],
)
def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path, yaml: str, hint: str):
    config = tmp_path / "c.yaml"
    config.write_text(yaml)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert hint in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_config_typo_from_the_command_line_is_one_line(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("sever: {port: 9000}\n")
    assert "did you mean `server`?" in one_line(nearline("serve", "--config", str(config)))


def _helps(parser) -> list[str]:  # type: ignore[no-untyped-def]
    import argparse

    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                texts += _helps(sub)
    return texts


def test_help_has_no_rst_markup():
    helps = _helps(build_parser())
    assert len(helps) > 8
    marked = [text.splitlines()[0] for text in helps if "``" in text]
    assert not marked


def test_train_router_never_overwrites_the_packaged_router_unasked(tmp_path: Path):
    from nearline.gateway.routing.learned import DEFAULT_ROUTER_PATH

    before = DEFAULT_ROUTER_PATH.read_bytes()
    line = one_line(
        nearline("train-router", "--data", str(tmp_path), "--output", str(DEFAULT_ROUTER_PATH))
    )
    assert "--replace-packaged" in line
    assert DEFAULT_ROUTER_PATH.read_bytes() == before


def test_train_router_needs_data_and_writes_to_the_current_directory_by_default():
    from nearline.training.cli import DEFAULT_OUTPUT, output_of

    assert nearline("train-router").returncode == 2  # --data is required
    args = build_parser().parse_args(["train-router", "--data", "d"])
    assert output_of(args) == Path(DEFAULT_OUTPUT)
    assert not output_of(args).is_absolute()  # relative: the user's current directory
