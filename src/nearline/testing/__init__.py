"""Test doubles and helpers shipped with nearline, for its own tests and for users' tests.

``serve_in_thread`` runs any ASGI app (the gateway, the mock upstream) on a real loopback
socket, so tests talk real HTTP without a subprocess (``run_in_thread`` gives the running
server too: what it still has in flight, and a way to run a coroutine on its loop);
``serve_in_process`` runs a real ``nearline serve`` process from a config file, as a user
would. ``eventually`` / ``eventually_async`` wait for a condition instead of a fixed sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.types import ASGIApp

from nearline.testing import http

T = TypeVar("T")

__all__ = [
    "QuickStopServer",
    "ThreadServer",
    "eventually",
    "eventually_async",
    "free_port",
    "run_in_thread",
    "serve_in_process",
    "serve_in_thread",
    "wait_until_ready",
]


def eventually(
    predicate: Callable[[], T], timeout_s: float = 10.0, *, interval_s: float = 0.01
) -> T:
    """Call ``predicate`` until it returns something truthy; return that. Fails with
    ``TimeoutError`` after ``timeout_s`` (for tests: wait on the condition, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout_s} s: {predicate!r}")
        time.sleep(interval_s)


async def eventually_async(
    predicate: Callable[[], T | Awaitable[T]], timeout_s: float = 10.0, *, interval_s: float = 0.01
) -> T:
    """``eventually`` for async tests: ``predicate`` may be a coroutine function; the loop
    keeps running between tries."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout_s} s: {predicate!r}")
        await asyncio.sleep(interval_s)


def free_port() -> int:
    """A loopback port nothing listens on now.

    Under pytest-xdist each worker takes its ports from a block of its own below the kernel's
    ephemeral range (Linux: 32768-60999), so a port one worker found free cannot be handed to
    another worker's server (or client socket) before the first one binds it: a ``nearline
    serve`` that lost that race would fail to start while another gateway answered its URL.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return _bind_free(0)
    first = _PORT_BLOCKS_START + int(worker.removeprefix("gw")) % _PORT_BLOCKS * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = first + next(_port_turns) % _PORT_BLOCK
        try:
            return _bind_free(port)
        except OSError:  # in use (or still in TIME_WAIT): the next one
            continue
    raise RuntimeError(f"no free port in {first}-{first + _PORT_BLOCK - 1}")


_PORT_BLOCKS_START, _PORT_BLOCK, _PORT_BLOCKS = 20_000, 1_000, 12
_port_turns = itertools.count()


def _bind_free(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        bound: int = sock.getsockname()[1]
        return bound


class QuickStopServer(uvicorn.Server):
    """A ``uvicorn.Server`` that notices ``should_exit`` within 10 ms (uvicorn checks every
    100 ms): tests that stop a server each time end sooner. Serves exactly the same."""

    async def main_loop(self) -> None:
        """uvicorn's loop, but checking ``should_exit`` every 10 ms (not 100 ms), so a stop
        is noticed at once; ``on_tick`` still runs every 100 ms, as in uvicorn."""
        ticks = 0
        should_exit = await self.on_tick(0)
        while not should_exit:
            await asyncio.sleep(0.01)
            ticks += 1
            if self.should_exit:
                return
            if ticks % 10 == 0:
                should_exit = await self.on_tick(ticks // 10 % 864_000)


class _ThreadServer(QuickStopServer):
    loop: asyncio.AbstractEventLoop | None = None

    def install_signal_handlers(self) -> None:  # the main thread owns signals
        pass

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


@dataclass(frozen=True)
class ThreadServer:
    """An ASGI app served on a loopback socket by a uvicorn server in a thread."""

    url: str
    _server: _ThreadServer

    def in_flight(self) -> int:
        """Requests (and WebSocket sessions) whose handler has not returned yet."""
        return len(self._server.server_state.tasks)

    def connections(self) -> int:
        return len(self._server.server_state.connections)

    def stop_soon(self) -> None:
        """Ask the server to shut down without waiting (``run_in_thread`` waits on exit):
        several servers asked first then waited for stop together."""
        self._server.should_exit = True

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coroutine`` on the server's event loop (where the app's objects live)."""
        assert self._server.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._server.loop).result(timeout_s)


@contextmanager
def run_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[ThreadServer]:
    """Run ``app`` on a real loopback socket (its lifespan included); stop it afterwards."""
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
        yield ThreadServer(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Run ``app`` on a real loopback socket; yield its base URL; stop it afterwards."""
    with run_in_thread(app, port) as server:
        yield server.url


def wait_until_ready(
    base_url: str,
    timeout_s: float = 60.0,
    path: str = "/readyz",
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``path`` until it answers 200; with ``process``, fail at once if it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before ready")
        try:
            if http.get(f"{base_url}{path}", timeout=1.0).status_code == 200:
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
        wait_until_ready(url, timeout_s=ready_timeout_s, process=process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
