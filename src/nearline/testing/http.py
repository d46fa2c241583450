"""httpx's one-shot functions (``get``, ``post``, ``stream``, …) for tests, with one TLS
context built once instead of one per call.

``httpx.post(url)`` builds a new client, and with it a TLS context that loads the CA bundle:
about 50 ms of CPU per call, even for ``http://127.0.0.1``, against ~1 ms for the request
itself. Tests make thousands of such calls (every poll of a mock's counters is one), so that
alone was a large share of the suite's CPU. These helpers pass the same arguments through to
httpx with ``verify`` set to a context built once: each call is still its own client and
connection, exactly as before, only cheaper.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

_TLS = ssl.create_default_context()


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=_TLS, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=_TLS, **kwargs)


def patch(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.patch(url, verify=_TLS, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, verify=_TLS, **kwargs)


@contextmanager
def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
    with httpx.stream(method, url, verify=_TLS, **kwargs) as response:
        yield response
