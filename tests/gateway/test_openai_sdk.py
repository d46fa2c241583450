"""The official ``openai`` SDK, sync and async, against a running ``nearline serve``.

Runs on the real local model and, for the ``mock`` cases, through nearline's mock upstream
(a real HTTP server standing in for a paid provider).
"""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name one primary colour."}]


def _client(gateway, key=None):
    return openai.OpenAI(base_url=gateway.v1, api_key=key or gateway.alpha_key, max_retries=0)


@pytest.mark.parametrize("which", ["local", "mock"])
def test_stream_deltas_join_to_the_non_streamed_answer(gateway, which):
    client = _client(gateway)
    model = gateway.local_model if which == "local" else gateway.mock_model
    params = {"model": model, "messages": QUESTION, "max_tokens": 24, "seed": 7, "temperature": 0.8}

    whole = client.chat.completions.create(**params)
    chunks = list(
        client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
    )

    text = whole.choices[0].message.content
    assert text, "the model produced no text"
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == text
    finish_reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish_reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert whole.usage.prompt_tokens > 0


@pytest.mark.parametrize("which", ["local", "mock"])
async def test_async_client_streams_and_answers(gateway, which):
    client = openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.alpha_key, max_retries=0)
    model = gateway.local_model if which == "local" else gateway.mock_model
    stream = await client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=8, stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces).strip()
    whole = await client.chat.completions.create(model=model, messages=QUESTION, max_tokens=8)
    assert whole.choices[0].finish_reason in ("stop", "length")
    await client.close()


def test_max_tokens_limits_the_answer_and_reports_length(gateway):
    client = _client(gateway)
    answer = client.chat.completions.create(
        model=gateway.local_model,
        max_completion_tokens=3,
        messages=[{"role": "user", "content": "Write a long story about the sea."}],
    )
    assert answer.choices[0].finish_reason == "length"
    assert 1 <= answer.usage.completion_tokens <= 4


def test_stop_sequence_ends_the_answer_before_it(gateway):
    client = _client(gateway)
    free = client.chat.completions.create(
        model=gateway.local_model,
        max_tokens=20,
        seed=3,
        temperature=0,
        messages=[{"role": "user", "content": "Count from 1 to 10 with commas."}],
    )
    text = free.choices[0].message.content
    assert text and len(text) > 3
    stop_at = text[2:4]
    stopped = client.chat.completions.create(
        model=gateway.local_model,
        max_tokens=20,
        seed=3,
        temperature=0,
        stop=[stop_at],
        messages=[{"role": "user", "content": "Count from 1 to 10 with commas."}],
    )
    assert stop_at not in (stopped.choices[0].message.content or "")
    assert len(stopped.choices[0].message.content or "") < len(text)


def test_models_are_listed_per_tenant(gateway):
    assert {m.id for m in _client(gateway).models.list()} == {
        gateway.local_model,
        gateway.mock_model,
    }
    assert {m.id for m in _client(gateway, gateway.beta_key).models.list()} == {gateway.mock_model}


def test_shared_prompt_prefix_reuses_the_kv_cache(gateway):
    client = _client(gateway)
    system = {"role": "system", "content": "You are a concise assistant for a bakery. " * 20}
    first = client.chat.completions.create(
        model=gateway.local_model,
        max_tokens=2,
        messages=[system, {"role": "user", "content": "Do you sell bread?"}],
    )
    second = client.chat.completions.create(
        model=gateway.local_model,
        max_tokens=2,
        messages=[system, {"role": "user", "content": "Do you sell cakes?"}],
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 150, "the shared system prompt should come from the KV cache"
    assert cached < second.usage.prompt_tokens
    assert first.usage.prompt_tokens == second.usage.prompt_tokens


def test_interleaved_conversations_each_resume_their_own_system_prompt(gateway):
    """Two tenants' different long system prompts take turns (A, B, A): B's turn takes the
    live context, so A's second turn can only skip its system prompt through a saved state."""
    client = _client(gateway)

    def ask(topic: str, question: str):
        system = {
            "role": "system",
            "content": f"You answer for {topic}. Be brief and polite. " * 30,
        }
        return client.chat.completions.create(
            model=gateway.local_model,
            max_tokens=2,
            messages=[system, {"role": "user", "content": question}],
        )

    first_a = ask("a bakery", "Do you sell bread?")
    ask("a bicycle shop", "Do you fix brakes?")
    second_a = ask("a bakery", "Do you sell cakes?")

    assert first_a.usage.prompt_tokens >= 300
    cached = second_a.usage.prompt_tokens_details.cached_tokens
    assert cached >= first_a.usage.prompt_tokens - 12, (
        "A's system prompt should be resumed from its saved KV state"
    )
    assert cached < second_a.usage.prompt_tokens
