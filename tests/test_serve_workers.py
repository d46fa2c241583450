"""``nearline serve --workers N``: several gateway processes on one port, one set of settings
(issue 16), from a real ``nearline`` subprocess against the mock upstream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from nearline.cli import build_parser
from nearline.testing import free_port, serve_in_thread, wait_until_ready
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


def test_workers_default_to_one():
    assert build_parser().parse_args(["serve"]).workers == 1
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3


def test_two_workers_answer_on_one_port(tmp_path):
    behaviour = MockBehaviour(ttft_s=0.0, tokens_per_s=10_000, completion_tokens=4)
    with serve_in_thread(create_mock_app(behaviour)) as mock_url:
        config = tmp_path / "nearline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
                    "request_log": {"sqlite_path": str(tmp_path / "requests.sqlite")},
                    "providers": {"mock": {"base_url": f"{mock_url}/v1"}},
                    "models": {"mock": {"provider": "mock", "upstream_model": "mock-1"}},
                }
            )
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEARLINE_")}
        command = [sys.executable, "-m", "nearline", "serve", "--config", str(config)]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, timeout_s=120, process=process)
            body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(base_url=url, timeout=30) as client:
                for stream in (False, True, False, True):
                    response = client.post("/v1/chat/completions", json=body | {"stream": stream})
                    assert response.status_code == 200, response.text
                    assert response.headers["x-request-id"].startswith("chatcmpl-")
            workers = [pid for pid in children(process.pid) if "spawn_main" in _cmdline(pid)]
            assert len(workers) >= 2
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert b"2 worker processes" in stderr


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
