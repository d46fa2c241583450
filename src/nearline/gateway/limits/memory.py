"""Limit counters in this process: the embedded default (one replica).

Spend is seeded from the key store's ledger at start-up (``seed_spend``), so budgets hold
across a restart; request and token windows start empty.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from nearline.gateway.limits.window import (
    Decision,
    Refusal,
    Standing,
    Subject,
    Window,
    period_label,
)


class MemoryCounters:
    def __init__(self) -> None:
        self._requests: dict[str, Window] = {}
        self._tokens: dict[str, Window] = {}
        self._spend: dict[tuple[str, str], float] = {}  # (subject name, period label) → USD

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def flush(self) -> None:
        pass  # counted at once: nothing is buffered

    def seed_spend(self, spent: Mapping[tuple[str, str], float]) -> None:
        """Spend already recorded this period: (subject name, period label) → USD."""
        for key, usd in spent.items():
            self._spend[key] = self._spend.get(key, 0.0) + usd

    def spent(self, subject: Subject, now: float | None = None) -> float:
        label = period_label(subject.limits.budget_period, now)
        return self._spend.get((subject.name, label), 0.0)

    async def acquire(self, subjects: Sequence[Subject]) -> Decision:
        now = time.time()
        sec = int(now)
        refused: Refusal | None = None
        refused_by: Subject | None = None
        retry_ms = 0
        standing: list[Standing] = []
        for subject in subjects:
            limits = subject.limits
            requests = self._requests.setdefault(subject.name, Window())
            tokens = self._tokens.setdefault(subject.name, Window())
            used_r = requests.used(sec) if limits.rpm is not None else 0
            used_t = tokens.used(sec) if limits.tpm is not None else 0
            spent = self.spent(subject, now) if limits.budget_usd is not None else 0.0
            if refused is None:
                if limits.budget_usd is not None and spent >= limits.budget_usd:
                    refused = "budget"
                elif limits.rpm is not None and used_r + 1 > limits.rpm:
                    refused, retry_ms = "requests", requests.wait_ms(used_r, limits.rpm, now)
                elif limits.tpm is not None and used_t >= limits.tpm:
                    refused, retry_ms = "tokens", tokens.wait_ms(used_t, limits.tpm, now)
                if refused is not None:
                    refused_by = subject
            standing.append(
                Standing(used_r, requests.reset_ms(now), used_t, tokens.reset_ms(now), spent)
            )
        if refused is None:
            for i, subject in enumerate(subjects):
                if subject.limits.rpm is not None:
                    window = self._requests[subject.name]
                    window.buckets[sec] = window.buckets.get(sec, 0) + 1
                    s = standing[i]
                    standing[i] = Standing(
                        s.requests + 1,
                        window.reset_ms(now),
                        s.tokens,
                        s.tokens_reset_ms,
                        s.spent_usd,
                    )
        return Decision(refused, retry_ms, sec, tuple(standing), refused_by)

    def add_tokens(self, subjects: Sequence[Subject], tokens: int) -> None:
        sec = int(time.time())
        for subject in subjects:
            if subject.limits.tpm is not None:
                window = self._tokens.setdefault(subject.name, Window())
                window.buckets[sec] = window.buckets.get(sec, 0) + tokens

    def give_back(self, subjects: Sequence[Subject], bucket: int) -> None:
        for subject in subjects:
            window = self._requests.get(subject.name)
            if window is not None and bucket in window.buckets:
                window.buckets[bucket] -= 1

    def add_spend(self, subjects: Sequence[Subject], usd: float) -> None:
        for subject in subjects:
            if subject.limits.budget_usd is not None:
                key = (subject.name, period_label(subject.limits.budget_period))
                self._spend[key] = self._spend.get(key, 0.0) + usd
