"""Issue 12, point 6: LlamaIndex ``OpenAILike`` in completion mode (``is_chat_model=False``:
``/v1/completions``), streaming and not, on nearline's mock upstream and the local model."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.llms.openai_like import OpenAILike

MODELS = {"m": {"provider": "up", "upstream_model": "mock-1"}, "local": {"provider": "local"}}


@pytest.fixture(scope="module")
def gateway(make_module_gateway: Any) -> Any:
    return make_module_gateway(
        models=MODELS,
        cache={"semantic": {"enabled": False}},
        progressive={"draft_model": None},
        local={"n_ctx": 512},
    )


def _llm(gateway: Any, model: str, **options: Any) -> OpenAILike:
    return OpenAILike(
        model=model,
        api_base=gateway.v1,
        api_key="unused",
        is_chat_model=False,
        context_window=2048,
        max_retries=0,
        **options,
    )


def test_complete_and_stream_complete(gateway: Any) -> None:
    llm = _llm(gateway, "m")
    whole = llm.complete("Write about caches.")
    assert len(whole.text.split()) == 24  # the mock's answer
    streamed = list(llm.stream_complete("Write about caches."))
    assert streamed[-1].text == whole.text  # each chunk carries the text so far
    assert "".join(chunk.delta or "" for chunk in streamed) == whole.text


def test_local_model(gateway: Any) -> None:
    answer = _llm(gateway, "local", max_tokens=8).complete("Say hello.")
    assert answer.text.strip()
