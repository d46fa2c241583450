"""The one small contract every model provider implements."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nearline.core.events import Event
from nearline.core.request import ChatRequest


@dataclass(frozen=True, slots=True)
class Capabilities:
    tools: bool = False
    logprobs: bool = False
    prefix_cache: bool = False


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute monotonic time by which the whole answer must be done."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """What the pipeline asks a provider for: one request, for one tenant, by a deadline."""

    request: ChatRequest
    upstream_model: str
    tenant: str
    deadline: Deadline | None = None
    provider: str | None = None  # chosen by the router; None: the model catalogue's provider


@runtime_checkable
class Provider(Protocol):
    """Streams one answer as typed events.

    ``stream`` yields ``Delta``* then ``Usage`` then ``Done``; failures raise a
    ``NearlineError`` (before or during the stream). Closing the iterator early (the client
    left) must stop the upstream work.
    """

    name: str
    capabilities: Capabilities

    def stream(self, call: ProviderCall) -> AsyncIterator[Event]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def is_ready(self) -> bool: ...
