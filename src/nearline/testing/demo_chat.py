"""``nearline demo chat``: the idea in one command — a preliminary at once, then the refined answer.

It starts nearline's mock upstream as a slow paid model (2 s to its first token by default)
on a loopback port, and a gateway whose ``demo-paid`` model answers progressively: the local
model drafts at once, the paid model's answer replaces the draft when it arrives. Open the
chat page it prints and ask anything. If the paid model fails before its first token, the
draft stays as the answer (``progressive.fallback_to_draft``).

The gateway is run by the caller's ``run_gateway`` (``nearline.cli``), so the demo starts,
checks and prints exactly as ``nearline serve`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nearline.config import DEFAULT_MODEL_NAME, Settings, load_settings
from nearline.testing import serve_in_thread
from nearline.testing.mock_upstream import MockBehaviour, create_mock_app

PAID_MODEL = "demo-paid"
RunGateway = Callable[..., int]


def add_chat_demo(demos: Any, run_gateway: RunGateway) -> None:
    chat = demos.add_parser(
        "chat",
        help="the chat page with a slow paid model (a mock) and local drafts: see a "
        "preliminary answer at once, then the refined one",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    chat.add_argument("--host", default="127.0.0.1")
    chat.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    chat.add_argument(
        "--ttft-ms", type=float, default=2000.0, help="the paid model's time to first token"
    )
    chat.add_argument("--tokens-per-s", type=float, default=25.0, help="the paid model's speed")
    chat.add_argument("--tokens", type=int, default=40, help="words per paid answer")
    chat.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="share of paid answers that fail (the draft then stays as the answer)",
    )
    chat.add_argument("--config", type=Path, default=None, help="settings to start from")
    chat.set_defaults(run=lambda args: run_chat_demo(args, run_gateway))


def demo_settings(paid_base_url: str, args: argparse.Namespace) -> Settings:
    """The user's settings (or the defaults) plus the paid model and progressive drafts."""
    base = load_settings(args.config)
    models = {
        **{name: route.model_dump() for name, route in base.models.items()},
        DEFAULT_MODEL_NAME: {"provider": "local", "public": True},
        PAID_MODEL: {
            "provider": "demo-paid",
            "progressive": True,
            "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
        },
    }
    return load_settings(
        args.config,
        server={**base.server.model_dump(), "host": args.host, "port": args.port},
        providers={
            **{name: p.model_dump() for name, p in base.providers.items()},
            "demo-paid": {"base_url": paid_base_url},
        },
        models=models,
        progressive={
            **base.progressive.model_dump(),
            "draft_model": DEFAULT_MODEL_NAME,
            "fallback_to_draft": True,
        },
    )


def run_chat_demo(args: argparse.Namespace, run_gateway: RunGateway) -> int:
    behaviour = MockBehaviour(
        ttft_s=args.ttft_ms / 1000,
        tokens_per_s=args.tokens_per_s,
        completion_tokens=args.tokens,
        error_rate=args.error_rate,
        model=PAID_MODEL,
    )
    with serve_in_thread(create_mock_app(behaviour)) as upstream:
        settings = demo_settings(f"{upstream}/v1", args)
        root = f"http://{settings.server.host}:{settings.server.port}"
        note = (
            f"\nnearline demo chat: open {root}/chat?model={PAID_MODEL} and ask anything: "
            f"the local model's draft shows at once, the paid model (a mock, "
            f"{args.ttft_ms / 1000:g} s to first token) replaces it. Ctrl-C stops."
        )
        return run_gateway(settings, note=note)
