"""Synthetic card transactions with ground-truth fraud labels.

Legitimate spending: many cards, each with a home country and a typical amount, buying
groceries, fuel, restaurants and online goods at random times (sometimes abroad, sometimes
big). Fraud comes in episodes: a stolen card is first tested with a tiny amount, then drained
with a quick burst of large purchases in risky categories, often abroad. The label says which
transactions belong to an episode; it is what the model learns from, never one of its inputs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SAFE_MERCHANTS = ("groceries", "fuel", "restaurant", "pharmacy", "transport", "online_retail")
RISKY_MERCHANTS = ("electronics", "gift_cards", "crypto_exchange", "jewellery")
MERCHANTS = SAFE_MERCHANTS + RISKY_MERCHANTS
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "NG", "IN", "RO", "CN")


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str
    country: str
    typical_amount: float


@dataclass(frozen=True, slots=True)
class GeneratorSettings:
    cards: int = 5_000
    fraud_share: float = 0.02  # of transactions
    seed: int = 7


class TransactionGenerator:
    """Yields transactions in time order at ``rate_per_s`` from ``start_ms`` on."""

    def __init__(self, settings: GeneratorSettings | None = None) -> None:
        self.settings = settings or GeneratorSettings()
        self._random = random.Random(self.settings.seed)
        r = self._random
        self.cards = [
            Card(f"card-{i:05d}", r.choice(COUNTRIES[:5]), round(math.exp(r.gauss(3.3, 0.6)), 2))
            for i in range(self.settings.cards)
        ]
        self._episodes: list[tuple[int, int, str, int]] = []  # (at_ms, seq, card, step)
        self._episode_seq = 0
        self._count = 0
        average_episode = 6.5
        self._episode_start_chance = self.settings.fraud_share / average_episode

    def _card(self, card_id: str) -> Card:
        return self.cards[int(card_id.rsplit("-", 1)[1])]

    def _legit(self, card: Card, at_ms: int) -> dict[str, Any]:
        r = self._random
        traveling = r.random() < 0.03
        amount = card.typical_amount * math.exp(r.gauss(0, 0.7))
        if r.random() < 0.02:  # the occasional big legitimate purchase
            amount *= r.uniform(5, 20)
        merchant = r.choice(SAFE_MERCHANTS) if r.random() < 0.93 else r.choice(RISKY_MERCHANTS)
        return self._transaction(
            card, at_ms, amount, merchant, r.choice(COUNTRIES) if traveling else card.country, False
        )

    def _fraud(self, card: Card, at_ms: int, step: int) -> dict[str, Any]:
        r = self._random
        if step == 0:
            amount = r.uniform(0.5, 3.0)  # testing the stolen card
            merchant = r.choice(("online_retail", "gift_cards"))
        else:
            amount = card.typical_amount * r.uniform(3, 25)
            merchant = r.choice(RISKY_MERCHANTS) if r.random() < 0.75 else r.choice(SAFE_MERCHANTS)
        abroad = r.random() < 0.6
        country = r.choice(COUNTRIES) if abroad else card.country
        return self._transaction(card, at_ms, amount, merchant, country, True)

    def _transaction(
        self, card: Card, at_ms: int, amount: float, merchant: str, country: str, fraud: bool
    ) -> dict[str, Any]:
        self._count += 1
        return {
            "tx_id": f"tx-{self.settings.seed}-{self._count}",
            "card": card.card_id,
            "card_country": card.country,
            "amount": round(amount, 2),
            "merchant": merchant,
            "country": country,
            "at_ms": at_ms,
            "is_fraud": fraud,
        }

    def _start_episode(self, at_ms: int) -> None:
        r = self._random
        card = r.choice(self.cards).card_id
        steps = r.randint(3, 10)
        when = at_ms
        for step in range(steps):
            self._episode_seq += 1
            heapq.heappush(self._episodes, (when, self._episode_seq, card, step))
            when += int(r.uniform(1_000, 15_000))

    def stream(self, start_ms: int, rate_per_s: float) -> Iterator[dict[str, Any]]:
        """Transactions forever, on average ``rate_per_s`` of them per second of ``at_ms``."""
        r = self._random
        at = float(start_ms)
        while True:
            at += r.expovariate(rate_per_s) * 1000
            at_ms = int(at)
            if r.random() < self._episode_start_chance:
                self._start_episode(at_ms)
            if self._episodes and self._episodes[0][0] <= at_ms:
                _, _, card_id, step = heapq.heappop(self._episodes)
                yield self._fraud(self._card(card_id), at_ms, step)
            else:
                yield self._legit(r.choice(self.cards), at_ms)

    def take(self, count: int, start_ms: int, rate_per_s: float) -> list[dict[str, Any]]:
        stream = self.stream(start_ms, rate_per_s)
        return [next(stream) for _ in range(count)]
