"""Issue 13, point 1 (second half): a genuine internal error is an OpenAI-shaped JSON 500 that
names the request, never Starlette's plain-text ``Internal Server Error``."""

from __future__ import annotations

from typing import Any

import httpx

from nearline.testing import http

EXACT_ONLY = {"semantic": {"enabled": False}}


class Bug(Exception):
    """Stands for a bug deep in the serving code."""


def _ask(gateway: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return http.post(f"{gateway.v1}/chat/completions", json=body, timeout=30)


def test_a_bug_in_the_pipeline_is_a_json_500_naming_the_request(
    make_gateway, monkeypatch, caplog, openai_error
):
    gateway = make_gateway(cache=EXACT_ONLY)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise Bug("secret internals at 10.0.0.7:8000")

    monkeypatch.setattr(gateway.state.pipeline, "answer", broken)
    response = _ask(gateway)
    error = openai_error(response, 500)
    assert error["type"] == "server_error"
    assert "10.0.0.7" not in error["message"]
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None


def test_a_bug_outside_the_chat_service_is_a_json_500(make_gateway, monkeypatch, openai_error):
    gateway = make_gateway(cache=EXACT_ONLY)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise Bug("secret")

    monkeypatch.setattr(gateway.state.catalogue, "names_for", broken)
    response = http.get(f"{gateway.v1}/models", timeout=30)
    error = openai_error(response, 500)
    assert "secret" not in error["message"]
    assert response.headers["x-request-id"] in error["message"]
