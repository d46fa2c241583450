"""Fixtures of the security regression tests (issue 13): a gateway in front of the mock
upstream, so nothing here waits on local model generation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

NO_CACHES = {"exact": {"enabled": False}, "semantic": {"enabled": False}}
EXACT_ONLY = {"semantic": {"enabled": False}}


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is a JSON error in OpenAI's shape with ``status``; its ``error``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


ErrorCheck = Callable[[httpx.Response, int], dict[str, Any]]


@pytest.fixture
def openai_error() -> ErrorCheck:
    """``openai_error(response, status)``: assert an OpenAI-shaped JSON error; its ``error``."""
    return assert_openai_error


@pytest.fixture(scope="module")
def exact_gateway(make_module_gateway):
    """A gateway with only the exact tier on (the key serialises the whole request)."""
    return make_module_gateway(cache=EXACT_ONLY)


@pytest.fixture(scope="module")
def uncached_gateway(make_module_gateway):
    """A gateway with both tiers off (the provider serialises the request)."""
    return make_module_gateway(cache=NO_CACHES)
