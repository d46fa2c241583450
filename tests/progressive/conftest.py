"""A real gateway in front of nearline's mock upstream (the one allowed stand-in for a paid
provider), for the WebSocket, browser and ``nearline warm`` tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from nearline.config import DEFAULT_MODEL_NAME
from nearline.testing import eventually
from nearline.testing.mock_upstream import MockBehaviour

PAID_MODEL = "big"
DRAFT_MODEL = DEFAULT_MODEL_NAME  # the light local model that drafts preliminaries


@dataclass(frozen=True)
class Stack:
    gateway: str
    upstream: Any  # the ``Mock`` view from the ``make_gateway`` factory (tests/conftest.py)

    @property
    def mock(self) -> str:
        root: str = self.upstream.root
        return root

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://", 1) + "/v1/ws"

    def stats(self) -> dict[str, int]:
        """The mock's counters since this stack started (``active``: open streams now)."""
        stats: dict[str, int] = self.upstream.stats()
        return stats

    def wait_for_stats(self, key: str, value: int, timeout_s: float = 10.0) -> dict[str, int]:
        """Wait until ``key`` reaches ``value``; return the counters (the last ones on timeout,
        for the test's own assertion to report)."""
        try:
            return eventually(lambda: (s := self.stats())[key] >= value and s, timeout_s)
        except TimeoutError:
            return self.stats()


@pytest.fixture
def make_stack(make_gateway: Any) -> Any:
    """``make_stack(MockBehaviour(...), *, with_draft_model=False, span_exporter=None,
    **settings)``: a context manager yielding a ``Stack``, a gateway whose model ``big`` is
    served by a mock upstream (shared by behaviour; a fresh one when it holds answers)."""

    @contextmanager
    def gateway_stack(
        behaviour: MockBehaviour,
        *,
        with_draft_model: bool = False,
        span_exporter: SpanExporter | None = None,
        **settings: Any,
    ) -> Iterator[Stack]:
        models: dict[str, Any] = {PAID_MODEL: {"provider": "paid", "upstream_model": "mock-1"}}
        if with_draft_model:
            models[DRAFT_MODEL] = {"provider": "local"}
        mock = make_gateway.mock(behaviour, fresh=behaviour.hold_until_released)
        gateway = make_gateway(
            mock,
            span_exporter=span_exporter,
            providers={"paid": {"base_url": mock.base_url, "read_timeout_s": 30}},
            models=models,
            **settings,
        )
        yield Stack(gateway=gateway.url, upstream=gateway.upstream)  # stopped with the test

    return gateway_stack
