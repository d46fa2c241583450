"""Bad input gets a clear OpenAI-shaped 4xx that names the problem, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from nearline.testing import http

pytestmark = pytest.mark.slow


def _post(gateway, body: bytes | dict, key: str | None = "alpha", **headers: str) -> httpx.Response:
    if key == "alpha":
        key = gateway.alpha_key
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if isinstance(body, bytes):  # raw bytes are still sent as JSON (a 415 otherwise)
        headers.setdefault("Content-Type", "application/json")
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return http.post(f"{gateway.v1}/chat/completions", headers=headers, timeout=30, **kwargs)


def _assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
        assert param.split(".")[0] in error["message"]
    return error


def _still_serving(gateway) -> None:
    ok = _post(
        gateway,
        {
            "model": gateway.mock_model,
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"]


def _chat(gateway, **fields):
    return {"model": gateway.mock_model, "messages": [{"role": "user", "content": "hi"}], **fields}


def test_malformed_json(gateway):
    error = _assert_error(_post(gateway, b'{"model": "x", "messages": ['), 400)
    assert "JSON" in error["message"]
    _still_serving(gateway)


def test_body_that_is_not_an_object(gateway):
    _assert_error(_post(gateway, b"[1, 2]"), 400)
    _still_serving(gateway)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("max_tokens", 0),
        ("messages", "hello"),
        ("stream", "yes please"),
        ("top_p", 3),
        ("stop", ["a", "b", "c", "d", "e"]),
    ],
)
def test_wrong_types_and_ranges_name_the_field(gateway, field, value):
    _assert_error(_post(gateway, _chat(gateway, **{field: value})), 400, param=field)
    _still_serving(gateway)


def test_missing_messages(gateway):
    _assert_error(_post(gateway, {"model": gateway.mock_model}), 400, param="messages")


def test_unknown_field_is_named(gateway):
    _assert_error(
        _post(gateway, _chat(gateway, logit_bias_typo={"1": 2})), 400, param="logit_bias_typo"
    )


def test_n_outside_openais_bounds_is_refused(gateway):  # n > 1 itself is served (issue 12)
    _assert_error(_post(gateway, _chat(gateway, n=129)), 400, param="n")
    _assert_error(_post(gateway, _chat(gateway, n=0)), 400, param="n")


def test_tools_on_a_model_without_them(gateway):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = _chat(gateway, tools=tools)
    body["model"] = gateway.local_model
    _assert_error(_post(gateway, body), 400, param="tools")
    _still_serving(gateway)


def test_unknown_model(gateway):
    body = _chat(gateway)
    body["model"] = "gpt-7-ultra"
    error = _assert_error(_post(gateway, body), 404, param="model")
    assert error["code"] == "model_not_found"
    assert gateway.mock_model in error["message"]  # says what is available
    _still_serving(gateway)


def test_oversized_body(gateway):
    huge = _chat(gateway)
    huge["messages"][0]["content"] = "x" * 200_000
    error = _assert_error(_post(gateway, huge), 413)
    assert error["code"] == "request_too_large"
    _still_serving(gateway)


@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong", "Token sk-test-alpha"])
def test_bad_or_missing_api_key(gateway, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    error = _assert_error(_post(gateway, _chat(gateway), key=None, **headers), 401)
    assert error["type"] == "authentication_error"
    _still_serving(gateway)


def test_model_the_tenant_may_not_use(gateway):
    body = _chat(gateway)
    body["model"] = gateway.local_model
    error = _assert_error(_post(gateway, body, key=gateway.beta_key), 403, param="model")
    assert error["type"] == "permission_error"


def test_unknown_route_is_openai_shaped(gateway):
    response = http.get(f"{gateway.v1}/nothing-here", timeout=5)
    _assert_error(response, 404)


def test_liveness_and_readiness(gateway):
    assert http.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}
    assert http.get(f"{gateway.url}/readyz", timeout=5).json() == {"status": "ready"}
