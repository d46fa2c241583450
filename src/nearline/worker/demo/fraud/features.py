"""Streaming features of a transaction: what it is plus what its card did in the last minute.

The same code computes features for training (offline, over generated history) and for
scoring (live, in the worker), so the model sees the same thing in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from nearline.worker.demo.fraud.generator import MERCHANTS, RISKY_MERCHANTS
from nearline.worker.state import WindowStats, WindowUpdate

CARD_WINDOW_MS = 60_000
FEATURE_NAMES = (
    "log_amount",
    "card_tx_last_minute",
    "card_spend_last_minute",
    "amount_vs_card_recent_mean",
    "abroad",
    "risky_merchant",
    "merchant",
)
_MERCHANT_INDEX = {name: index for index, name in enumerate(MERCHANTS)}


def window_updates(transactions: Sequence[Mapping[str, Any]]) -> list[WindowUpdate]:
    return [
        WindowUpdate(str(tx["card"]), str(tx["tx_id"]), int(tx["at_ms"]), float(tx["amount"]))
        for tx in transactions
    ]


def feature_row(tx: Mapping[str, Any], card: WindowStats) -> list[float]:
    amount = float(tx["amount"])
    earlier_count = card.count - 1
    earlier_mean = (card.total - amount) / earlier_count if earlier_count > 0 else amount
    return [
        math.log1p(amount),
        float(card.count),
        card.total,
        amount / max(earlier_mean, 1.0),
        float(tx["country"] != tx["card_country"]),
        float(tx["merchant"] in RISKY_MERCHANTS),
        float(_MERCHANT_INDEX.get(str(tx["merchant"]), -1)),
    ]


def feature_matrix(
    transactions: Sequence[Mapping[str, Any]], card_stats: Sequence[WindowStats]
) -> npt.NDArray[np.float64]:
    rows = [feature_row(tx, stats) for tx, stats in zip(transactions, card_stats, strict=True)]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
