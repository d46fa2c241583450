"""What the mock upstream answers beyond plain text: tool calls, JSON, ``n`` choices, logprobs.

Deterministic, like the plain answers, and shaped as OpenAI streams them:

* **Tools.** When the request offers ``tools``, ``tool_choice`` is not ``"none"`` and the
  last message is the user's, the answer is a tool call (``finish_reason: "tool_calls"``):
  the named tool, else the first one — and the second one too when ``parallel_tool_calls``
  is ``true`` and ``tool_choice`` is not a name. Its arguments are an instance of the tool's
  ``parameters`` schema (:func:`instance_of`), streamed in fragments of a few characters;
  the first fragment carries the call's ``id`` and name. After a tool result the answer is
  text again, so a tool round trip completes.
* **JSON.** ``response_format`` ``json_schema`` → an instance of the schema; ``json_object``
  → ``{"answer": "<the words>"}``; streamed in fragments.
* **n > 1.** ``n`` choices, each its own words, streamed interleaved with their ``index``.
* **logprobs.** Each text fragment carries ``logprobs.content`` (and ``top_logprobs``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

FRAGMENT_CHARS = 7  # how finely JSON texts (arguments, formatted answers) are streamed


@dataclass(frozen=True, slots=True)
class PlannedChoice:
    deltas: list[dict[str, Any]]  # the ``delta`` objects after the role chunk, in order
    finish_reason: str
    logprobs: list[dict[str, Any] | None]  # per delta: its ``logprobs`` object, or None


def plan(
    payload: dict[str, Any], words_for: Callable[[int], list[str]], finish: str
) -> list[PlannedChoice] | None:
    """The choices to answer ``payload`` with, or ``None`` for the plain text answer."""
    tools = payload.get("tools") or []
    formatted = (payload.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    n = int(payload.get("n") or 1)
    if not (tools or formatted or n > 1 or payload.get("logprobs")):
        return None
    return [_choice(payload, words_for(index), finish) for index in range(n)]


def _choice(payload: dict[str, Any], words: list[str], finish: str) -> PlannedChoice:
    calls = _tool_calls(payload)
    if calls:
        deltas = []
        for index, (call_id, name, arguments) in enumerate(calls):
            pieces = _fragments(arguments)
            deltas.append(_call_delta(index, pieces[0], call_id, name))
            deltas += [_call_delta(index, piece) for piece in pieces[1:]]
        return PlannedChoice(deltas, "tool_calls", [None] * len(deltas))
    text_format = payload.get("response_format") or {}
    if text_format.get("type") == "json_schema":
        schema = (text_format.get("json_schema") or {}).get("schema") or {}
        pieces = _fragments(orjson.dumps(instance_of(schema, words)).decode())
    elif text_format.get("type") == "json_object":
        pieces = _fragments(orjson.dumps({"answer": " ".join(words)}).decode())
    else:
        pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        text_format = {}
    finish = "stop" if text_format else finish  # a JSON answer is always whole
    top = int(payload.get("top_logprobs") or 0)
    logprobs = [_logprobs(piece, top) if payload.get("logprobs") else None for piece in pieces]
    return PlannedChoice([{"content": piece} for piece in pieces], finish, logprobs)


def _tool_calls(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(id, name, arguments)`` of the calls to make, or none."""
    tools = payload.get("tools") or []
    choice = payload.get("tool_choice", "auto")
    messages = payload.get("messages") or []
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return []
    functions = [tool["function"] for tool in tools]
    if isinstance(choice, dict):
        chosen = [f for f in functions if f["name"] == choice["function"]["name"]]
    elif payload.get("parallel_tool_calls") is True:
        chosen = functions[:2]
    else:
        chosen = functions[:1]
    digest = hashlib.sha256(orjson.dumps(messages)).hexdigest()
    return [
        (
            f"call_{digest[index * 8 : index * 8 + 16]}",
            function["name"],
            orjson.dumps(instance_of(function.get("parameters") or {}, ["mock"])).decode(),
        )
        for index, function in enumerate(chosen)
    ]


def _call_delta(
    index: int, arguments: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call = {"index": index, "id": call_id, "type": "function"}
        call["function"] = {"name": name, "arguments": arguments}
    return {"tool_calls": [call]}


def _fragments(text: str) -> list[str]:
    return [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)] or [""]


def _logprobs(piece: str, top: int) -> dict[str, Any]:
    token = {"token": piece, "logprob": -0.25, "bytes": list(piece.encode())}
    alternatives = [
        {"token": f"{piece}~{i}", "logprob": -1.0 - i, "bytes": None} for i in range(top)
    ]
    return {"content": [{**token, "top_logprobs": alternatives}], "refusal": None}


def instance_of(schema: dict[str, Any], words: list[str]) -> Any:
    """A value valid for ``schema`` (the subset structured outputs use: objects with
    properties, arrays, enums, consts, strings, numbers, integers, booleans, anyOf)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("anyOf"):
        return instance_of(schema["anyOf"][0], words)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    word = words[0] if words else "mock"
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties") or {}
        return {name: instance_of(sub, words) for name, sub in properties.items()}
    if kind == "array":
        return [instance_of(schema.get("items") or {}, words)] * max(1, schema.get("minItems", 1))
    if kind == "string":
        return word
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return None


def plan_body(choices: list[PlannedChoice]) -> list[dict[str, Any]]:
    """The choices of a non-streamed ``chat.completion`` body."""
    folded = []
    for index, choice in enumerate(choices):
        text = "".join(d.get("content", "") for d in choice.deltas)
        calls: dict[int, dict[str, Any]] = {}
        for delta in choice.deltas:
            for call in delta.get("tool_calls", ()):
                whole = calls.setdefault(
                    call["index"],
                    {"id": call["id"], "type": "function", "function": {**call["function"]}},
                )
                if "id" not in call:
                    whole["function"]["arguments"] += call["function"]["arguments"]
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else text}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        folded.append({"index": index, "message": message, "finish_reason": choice.finish_reason})
    return folded


def plan_deltas(choices: list[PlannedChoice]) -> list[tuple[int, dict[str, Any], Any, str | None]]:
    """``(choice, delta, logprobs, finish_reason)`` in streaming order: the choices
    interleaved, then each one's finish."""
    longest = max(len(choice.deltas) for choice in choices)
    order = [
        (index, choice.deltas[step], choice.logprobs[step], None)
        for step in range(longest)
        for index, choice in enumerate(choices)
        if step < len(choice.deltas)
    ]
    return order + [(index, {}, None, c.finish_reason) for index, c in enumerate(choices)]
