"""Issue 13, point 8: strict types where OpenAI is strict, and ``Content-Encoding`` honoured.

``max_tokens: true`` / ``"10"``, ``stream: "yes"`` (which turned streaming on) and
``seed: "42"`` used to be accepted (pydantic's lax mode); a gzip body was read as JSON
("not valid JSON") and JSON labelled ``br`` was served. Now wrong types are a 400 naming the
field; gzip bodies are decoded up to ``server.max_body_bytes`` (413 past it: no zip bomb);
other encodings are a 415.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import orjson
import pytest

from nearline.core.errors import InvalidRequest
from nearline.gateway.api.openai import parse_chat_request
from nearline.testing import http

HI = [{"role": "user", "content": "hi"}]
BODY = {"model": "m", "messages": HI, "max_tokens": 3}


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("max_tokens", True, "max_tokens"),
        ("max_tokens", "10", "max_tokens"),
        ("max_tokens", 10.0, "max_tokens"),
        ("max_completion_tokens", "10", "max_completion_tokens"),
        ("stream", "yes", "stream"),
        ("stream", 1, "stream"),
        ("seed", "42", "seed"),
        ("seed", True, "seed"),
        ("temperature", "0.5", "temperature"),
        ("temperature", True, "temperature"),
        ("top_p", "1", "top_p"),
        ("n", "1", "n"),
        ("logprobs", "false", "logprobs"),
        ("stream_options", {"include_usage": "yes"}, "stream_options"),
        ("nearline", {"progressive": 1}, "nearline"),
        ("nearline", {"ttft_budget_ms": "100"}, "nearline"),
        ("messages", [{"role": "user", "content": 5}], "messages"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(
    field: str, value: Any, param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_chat_request(orjson.dumps({"model": "m", "messages": HI, field: value}))
    assert raised.value.param == param
    assert param in raised.value.message


def test_values_of_the_right_type_still_parse() -> None:
    chat = parse_chat_request(
        orjson.dumps(
            {
                "model": "m",
                "messages": HI,
                "temperature": 1,  # an integer is a number, as in JSON Schema
                "top_p": 0.5,
                "max_tokens": 10,
                "seed": 42,
                "stream": True,
                "stream_options": {"include_usage": True},
                "nearline": {"progressive": False, "ttft_budget_ms": 100},
            }
        )
    )
    assert chat.temperature == 1.0
    assert chat.stream is True
    assert chat.include_usage is True


# --- Content-Encoding over HTTP --------------------------------------------------------------


def _post(gateway: Any, content: bytes, **headers: str) -> httpx.Response:
    headers.setdefault("content-type", "application/json")
    return http.post(f"{gateway.v1}/chat/completions", content=content, headers=headers, timeout=30)


def test_a_gzip_body_is_decoded(uncached_gateway: Any) -> None:
    response = _post(
        uncached_gateway, gzip.compress(orjson.dumps(BODY)), **{"content-encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_a_gzip_bomb_is_a_413_without_decoding_it_all(
    uncached_gateway: Any, openai_error: Any
) -> None:
    limit = uncached_gateway.settings.server.max_body_bytes
    bomb = gzip.compress(b" " * (limit * 50), compresslevel=9)
    assert len(bomb) < limit
    response = _post(uncached_gateway, bomb, **{"content-encoding": "gzip"})
    assert openai_error(response, 413)["code"] == "request_too_large"


@pytest.mark.parametrize(
    "content",
    [b"\x1f\x8b not gzip", gzip.compress(orjson.dumps(BODY))[:-12]],
    ids=["corrupt", "cut short"],
)
def test_a_bad_gzip_body_is_a_400(uncached_gateway: Any, openai_error: Any, content: bytes) -> None:
    response = _post(uncached_gateway, content, **{"content-encoding": "gzip"})
    assert "gzip" in openai_error(response, 400)["message"]


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
def test_another_encoding_is_a_415(uncached_gateway: Any, openai_error: Any, encoding: str) -> None:
    response = _post(uncached_gateway, orjson.dumps(BODY), **{"content-encoding": encoding})
    assert openai_error(response, 415)["code"] == "unsupported_content_encoding"


def test_identity_is_no_encoding(uncached_gateway: Any) -> None:
    response = _post(uncached_gateway, orjson.dumps(BODY), **{"content-encoding": "identity"})
    assert response.status_code == 200, response.text
