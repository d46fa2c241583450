"""Several mock upstreams at once (slow, failing, flapping), for routing tests and benchmarks.

Each runs nearline's mock provider (``testing/mock_upstream.py``) on its own loopback port, over
real HTTP, and reads its ``/mock/stats`` counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from nearline.testing import run_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app


@dataclass(frozen=True, slots=True)
class MockUpstream:
    root: str  # http://127.0.0.1:PORT

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    async def stats(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{self.root}/mock/stats")
            counts: dict[str, int] = response.json()
            return counts

    async def wait_for(self, counter: str, at_least: int, timeout_s: float = 5.0) -> dict[str, int]:
        """Poll the stats until ``counter`` reaches ``at_least`` (or time runs out)."""
        deadline = time.monotonic() + timeout_s
        stats = await self.stats()
        while stats[counter] < at_least and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            stats = await self.stats()
        return stats


@contextmanager
def mock_upstreams(**behaviours: MockBehaviour) -> Iterator[dict[str, MockUpstream]]:
    """Start one mock upstream per keyword (its name); stop them all afterwards (together:
    each is asked to stop, then each is waited for)."""
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(run_in_thread(create_mock_app(behaviour)))
            for name, behaviour in behaviours.items()
        }
        for server in servers.values():  # called first on exit: all shut down at once
            stack.callback(server.stop_soon)
        yield {name: MockUpstream(server.url) for name, server in servers.items()}


def provider_settings(upstreams: dict[str, MockUpstream], **http: Any) -> dict[str, dict[str, Any]]:
    """The ``providers:`` section naming each mock upstream (``http``: timeouts, ...)."""
    return {name: {"base_url": up.base_url, **http} for name, up in upstreams.items()}
