"""What the local model can and cannot do with a request's formats, tools and parts.

``response_format`` is enforced with a llama.cpp grammar: ``json_object`` with llama.cpp's
JSON grammar (an object at the root), ``json_schema`` with a grammar converted from the
schema (``llama_cpp.llama_grammar.json_schema_to_gbnf``), so every token sampled keeps the
output a prefix of a valid instance and a finished answer always parses and validates. (An
answer cut at ``max_tokens`` is cut: ``finish_reason`` says ``length``, as OpenAI's does.)

Tools, logprobs and image parts are refused with a 400 naming the field: SmolLM2-135M has
no tool-calling template or vision, and llama.cpp's streamed logprobs are not wired here.
"""

from __future__ import annotations

from typing import Any

import orjson
from llama_cpp import llama_cpp as llama_c
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

from nearline.core.chat_types import JsonObjectFormat, JsonSchemaFormat
from nearline.core.errors import InvalidRequest, UnsupportedParameter
from nearline.core.request import ChatRequest


def refuse_unsupported(request: ChatRequest) -> None:
    """Raise a 400 naming the first field the local model cannot honour."""
    if request.tools:
        raise UnsupportedParameter(
            f"the model {request.model!r} (the local model) does not support tools",
            param="tools",
        )
    if request.logprobs:
        raise UnsupportedParameter(
            f"the model {request.model!r} (the local model) does not return logprobs",
            param="logprobs",
        )
    for index, message in enumerate(request.messages):
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.type == "image_url":
                    raise UnsupportedParameter(
                        f"the model {request.model!r} (the local model) cannot read images "
                        f"(messages.{index}.content.{part_index} is an image_url part)",
                        param="messages",
                    )


def grammar_text(request: ChatRequest) -> str | None:
    """The GBNF grammar the answer must follow, or ``None`` for free text; a schema the
    converter cannot handle is a 400 naming ``response_format``."""
    formatted = request.response_format
    if isinstance(formatted, JsonObjectFormat):
        return JSON_GBNF
    if not isinstance(formatted, JsonSchemaFormat):
        return None
    schema: dict[str, Any] = formatted.json_schema.schema_ or {"type": "object"}
    try:
        text: str = json_schema_to_gbnf(orjson.dumps(schema).decode())
    except Exception as exc:  # the converter raises bare errors of any kind
        raise InvalidRequest(
            f"the local model cannot enforce this response_format schema: "
            f"{type(exc).__name__}: {exc}",
            param="response_format",
            code="invalid_json_schema",
        ) from exc
    return text


def load_grammar(llm: Any, text: str) -> LlamaGrammar:
    """``text`` as a grammar ``llm`` accepts (parsed once here: llama.cpp answers a grammar it
    cannot parse with a null sampler, which must never reach a sampler chain)."""
    probe = llama_c.llama_sampler_init_grammar(llm._model.vocab, text.encode(), b"root")
    if not probe:
        raise InvalidRequest(
            "the local model cannot enforce this response_format (its grammar does not parse)",
            param="response_format",
            code="invalid_json_schema",
        )
    llama_c.llama_sampler_free(probe)
    return LlamaGrammar.from_string(text, verbose=False)
