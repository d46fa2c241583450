"""Hand-made request-log rows whose report figures are worked out by hand in the tests.

``make_row`` and ``worked_example`` are fixtures that hand out the builder functions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from nearline.gateway.telemetry.requestlog import RequestRecord

NOW = time.time()


def row(
    model: str,
    source: str,
    wait_ms: float | None,
    total_ms: float,
    *,
    outcome: str = "ok",
    tokens: tuple[int, int] = (10, 20),
    cost: float | None = 0.0,
    error_code: str | None = None,
    age_s: float = 60.0,
    tenant: str = "acme",
) -> RequestRecord:
    return RequestRecord(
        ts=NOW - age_s,
        request_id=uuid.uuid4().hex,
        tenant=tenant,
        model=model,
        route="chat.completions",
        source=source,
        similarity=None if source == "inference" else 0.97,
        stream=True,
        outcome=outcome,
        error_code=error_code,
        time_to_first_useful_ms=wait_ms,
        time_to_first_token_ms=wait_ms,
        total_ms=total_ms,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        cached_tokens=0,
        cost_usd=cost,
        input="[]",
        output="",
    )


def worked_example(tenant: str = "acme") -> list[RequestRecord]:
    """Nine requests; the tests' expected figures are worked out from these by hand.

    Model ``m`` has a price, model ``n`` does not (its costs are None).
    """
    return [
        row("m", "inference", 50, 250, cost=0.003, tenant=tenant),  # instant
        row("m", "inference", 1000, 1400, cost=0.001, tenant=tenant),  # flow (1 s is inclusive)
        row("m", "inference", 2500, 4000, cost=0.002, tenant=tenant),  # attention, 1.5 s over
        row("m", "inference", None, 3000, outcome="abandoned", tokens=(10, 0), tenant=tenant),
        row(
            "m",
            "inference",
            None,
            12_000,
            outcome="error",
            tokens=(0, 0),
            error_code="upstream_timeout",
            tenant=tenant,
        ),
        row("m", "exact", 5, 20, tokens=(10, 20), tenant=tenant),
        row("m", "exact", 8, 30, tokens=(12, 18), tenant=tenant),
        row("n", "inference", 12_000, 15_000, cost=None, tenant=tenant),  # lost, 11 s over
        row("n", "semantic", 30, 60, tokens=(5, 5), cost=None, tenant=tenant),
    ]


@pytest.fixture
def make_row() -> Callable[..., RequestRecord]:
    return row


@pytest.fixture
def worked_example_rows() -> Callable[..., list[RequestRecord]]:
    return worked_example
