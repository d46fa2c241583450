"""A real gateway in front of nearline's mock upstream (the one allowed stand-in for a paid
provider), for the WebSocket, browser and ``nearline warm`` tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from nearline.app import create_app
from nearline.config import DEFAULT_MODEL_NAME, load_settings
from nearline.testing import serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

PAID_MODEL = "big"
DRAFT_MODEL = DEFAULT_MODEL_NAME  # the light local model that drafts preliminaries


@dataclass(frozen=True)
class Stack:
    gateway: str
    mock: str

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://", 1) + "/v1/ws"

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = httpx.get(f"{self.mock}/mock/stats", timeout=5).json()
        return stats

    def wait_for_stats(self, key: str, value: int, timeout_s: float = 10.0) -> dict[str, int]:
        """Poll the mock's counters until ``key`` reaches ``value`` (or give up and return)."""
        deadline = time.monotonic() + timeout_s
        stats = self.stats()
        while stats[key] < value and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = self.stats()
        return stats


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
    with serve_in_thread(create_mock_app(behaviour)) as mock_url:
        config = load_settings(
            providers={"paid": {"base_url": f"{mock_url}/v1", "read_timeout_s": 30}},
            models=models,
            **settings,
        )
        with serve_in_thread(create_app(config, span_exporter=span_exporter)) as url:
            yield Stack(gateway=url, mock=mock_url)


@pytest.fixture
def make_stack() -> Any:
    """``make_stack(MockBehaviour(...), **settings)``: a context manager yielding a ``Stack``."""
    return gateway_stack
