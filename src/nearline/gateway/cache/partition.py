"""Which semantic-cache entries may answer a query: the partition key.

Two questions are only comparable when everything else that shapes the answer is equal: the
tenant (never serve another tenant's answer), the model, the sampling and format parameters
that change the answer, and the conversation so far, system and developer prompts included.
The conversation counts as the exact tier counts it (``ChatRequest.turns``, the one
definition): every message apart, its role as sent, its ``name``, its content with its part
boundaries. Of the question itself only the text is left out — it is what is embedded and
compared — while its role and ``name`` count (alice's "What is my name?" is not bob's).

Prior turns being part of the key is what keeps a follow-up such as "and its population?" —
whose meaning lives in the earlier turns — from matching a standalone question: a follow-up
can only match the same follow-up asked after the same conversation.

Requests that offer ``tools`` are not served by the semantic tier at all (no key): a
tool call's arguments are read off the exact wording (a city, a date, an amount), and an
agent acts on them, so a near-duplicate question must never replay another question's call
(the exact tier still serves the same request, keyed on the tool set).

The key is readable at the front (tenant and model, for purges) and a digest behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

from nearline.core.request import ANSWER_CHANGING_FIELDS, Turn

__all__ = [
    "PartitionParts",
    "SemanticKey",
    "Turn",
    "parse_partition",
    "partition_key",
    "semantic_key",
    "tenant_prefix",
]


@dataclass(frozen=True, slots=True)
class SemanticKey:
    """Where a query is looked up (``partition``) and what is embedded (``query``)."""

    partition: str
    query: str


@dataclass(frozen=True, slots=True)
class PartitionParts:
    tenant: str
    model: str
    digest: str


def partition_key(
    tenant: str,
    model: str,
    *,
    context: Sequence[Turn] = (),
    question: Turn | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The partition for ``question`` asked by ``tenant`` of ``model`` after ``context``
    (every earlier message, system and developer ones included).

    ``question``'s role and name count, its text does not. ``params`` may hold the whole
    request body's parameters: only :data:`ANSWER_CHANGING_FIELDS` with a value other than
    ``None`` count.
    """
    kept = {
        name: value
        for name, value in (params or {}).items()
        if name in ANSWER_CHANGING_FIELDS and value is not None
    }
    canonical = {
        "context": [turn.identity() for turn in context],
        "question": None if question is None else question.identity(with_text=False),
        "params": kept,
    }
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{quote(tenant, safe='')}|{quote(model, safe='')}|{digest[:32]}"


def parse_partition(partition: str) -> PartitionParts:
    """Split a key made by :func:`partition_key` (for purges by tenant or model)."""
    tenant, model, digest = partition.split("|", 2)
    return PartitionParts(unquote(tenant), unquote(model), digest)


def semantic_key(
    tenant: str,
    model: str,
    messages: Sequence[Turn],
    params: Mapping[str, Any] | None = None,
) -> SemanticKey | None:
    """The partition and the text to embed for a chat request (``ChatRequest.turns()``),
    or ``None`` if it has none.

    The query is the last message, which must come from the user; every earlier message is
    context. Returns ``None`` when the last message is not a non-empty user message (for
    example a tool result), or when ``params`` offer tools: the semantic tier serves
    neither.
    """
    if not messages or messages[-1].role != "user" or not messages[-1].text.strip():
        return None
    if params is not None and params.get("tools"):
        return None
    *earlier, last = messages
    partition = partition_key(tenant, model, context=earlier, question=last, params=params)
    return SemanticKey(partition=partition, query=last.text)


def tenant_prefix(tenant: str, model: str | None = None) -> str:
    """The prefix shared by all partition keys of ``tenant`` (and ``model``, if given)."""
    prefix = f"{quote(tenant, safe='')}|"
    return prefix if model is None else f"{prefix}{quote(model, safe='')}|"
