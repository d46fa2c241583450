"""The strict base model: every settings section and wire shape rejects unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A pydantic model that refuses unknown fields (a typo is an error, never ignored)."""

    model_config = ConfigDict(extra="forbid")


class FrozenStrict(Strict):
    """A strict model whose instances cannot change once built (shared, hashable values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
