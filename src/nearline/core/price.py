"""What tokens cost: one price type for the model catalogue, routing deployments and plans."""

from __future__ import annotations

from pydantic import Field

from nearline.core.events import Usage
from nearline.core.model import FrozenStrict


class Price(FrozenStrict):
    """USD per million tokens, for the savings and cost figures."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / 1_000_000


FREE = Price()
