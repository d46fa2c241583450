"""What answered a request: each answer source, spelled once.

The value is what the ``x-nearline-source`` header, the response's ``nearline.source`` field,
the metrics' ``source`` label and the request log's ``source`` column carry.
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    INFERENCE = "inference"  # a provider computed it for this request
    EXACT = "exact"  # the exact cache: the same answer-changing request before
    SEMANTIC = "semantic"  # the semantic cache: a paraphrase of an answered question
    SEMANTIC_NEAR = "semantic-near"  # a near match shown as a progressive preliminary
    DRAFT = "draft"  # the light model's draft shown as a progressive preliminary

    @property
    def is_cached(self) -> bool:
        """Answered from a cache tier: no upstream spend."""
        return self in CACHED


CACHED = frozenset({Source.EXACT, Source.SEMANTIC})
"""Sources that answer from a cache tier."""
