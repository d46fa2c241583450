"""Typed application state: what the lifespan built, reachable from a request."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Tracer
from starlette.requests import HTTPConnection

from nearline.config import Settings
from nearline.core.provider import Provider
from nearline.gateway.keys import KeyManager
from nearline.gateway.limits import Governor
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.pipeline import ServingPipeline
from nearline.gateway.serving.service import ChatService
from nearline.gateway.telemetry.requestlog import RequestLog
from nearline.gateway.tenancy import KeyRing


@dataclass(slots=True)
class AppState:
    settings: Settings
    keyring: KeyRing
    providers: dict[str, Provider]
    catalogue: Catalogue
    pipeline: ServingPipeline
    service: ChatService
    tracer: Tracer
    request_log: RequestLog | None = None
    keys: KeyManager | None = None  # the key store and spend ledger (gateway/keys)
    governor: Governor | None = None  # rate limits and budgets (gateway/limits)


def app_state(request: HTTPConnection) -> AppState:
    state = request.app.state.nearline
    assert isinstance(state, AppState)
    return state
