"""What the demo shows: decisions, how right they were, how fast they came, at what rate."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any

from nearline.worker.broker import Entry, entry_id_ms
from nearline.worker.metrics import LatencyWindow


@dataclass
class Scoreboard:
    decisions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # true/false positive/negative
    latency_ms: LatencyWindow = field(default_factory=lambda: LatencyWindow(20_000))
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    produced: int = 0

    def add(self, entry: Entry) -> None:
        data = entry.data
        decision = str(data.get("decision"))
        self.decisions[decision] += 1
        caught = decision != "allow"
        fraud = bool(data.get("is_fraud"))
        self.outcomes[
            ("true" if caught == fraud else "false") + ("_positive" if caught else "_negative")
        ] += 1
        self.latency_ms.add(entry.published_ms - entry_id_ms(str(data["source_id"])))
        self.recent.append(time.monotonic())

    def per_second(self, over_s: float = 5.0) -> float:
        horizon = time.monotonic() - over_s
        return sum(1 for _ in takewhile(lambda t: t >= horizon, reversed(self.recent))) / over_s

    def snapshot(self) -> dict[str, Any]:
        tp = self.outcomes["true_positive"]
        fp = self.outcomes["false_positive"]
        fn = self.outcomes["false_negative"]
        return {
            "produced": self.produced,
            "decided": sum(self.decisions.values()),
            "decisions": dict(self.decisions),
            "per_second": round(self.per_second(), 1),
            "latency_ms": {
                "p50": self.latency_ms.percentile(0.50),
                "p99": self.latency_ms.percentile(0.99),
                "max": self.latency_ms.percentile(1.0),
            },
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        }
