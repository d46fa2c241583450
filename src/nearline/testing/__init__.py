"""Test doubles and helpers shipped with nearline, for its own tests and for users' tests.

``serve_in_thread`` runs any ASGI app (the gateway, the mock upstream) on a real loopback
socket, so tests talk real HTTP without a subprocess; ``serve_in_process`` runs a real
``nearline serve`` process from a config file, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the main thread owns signals
        pass


@contextmanager
def serve_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Run ``app`` on a real loopback socket; yield its base URL; stop it afterwards."""
    port = port or free_port()
    server = _ThreadServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server failed to start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until_ready(base_url: str, timeout_s: float = 60.0, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}{path}", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not become ready in {timeout_s} s")


@contextmanager
def serve_in_process(config: Path, *, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """Run ``nearline serve --config CONFIG`` on a free loopback port; yield its base URL once
    ready; stop it afterwards. ``NEARLINE_*`` variables are not passed on: the file decides."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("NEARLINE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "nearline", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, timeout_s=ready_timeout_s)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
