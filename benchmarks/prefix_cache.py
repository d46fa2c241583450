"""Interleaved conversations with different long system prompts: does each keep its prefix?

Three tenants, each with its own ~1,000-token system prompt, take turns (A, B, C, A, B, C, …)
asking different short questions of the local model through a real ``nearline serve``.
Without saved KV states, every turn finds the context taken by another tenant's prompt and
re-evaluates ~1,000 tokens. With ``local.state_cache_mb`` (the default), each turn resumes
its own prefix. Both gateways run side by side and alternate turn by turn; the exact cache
is bypassed (``Cache-Control: no-store``). Requests go over a TCP_NODELAY socket in one write
(``workload.stream_chat``): httpx's separate head and body writes add ~40 ms here.
Prints time to first token p50/p95 for warm turns (every turn after a tenant's first) and
the cached prompt tokens reported in ``usage``.

    .venv/bin/python benchmarks/prefix_cache.py --rounds 6
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nearline.testing import serve_in_process

sys.path.insert(0, str(Path(__file__).parent))
from workload import percentile, stream_chat

TOPICS = ["a bakery", "a bicycle repair shop", "a public library"]
_VOCABULARY = (
    "policy customer order refund delivery opening hours staff member price list "
    "discount loyalty card weekend holiday receipt payment method allergy ingredient "
    "repair warranty booking return exchange membership fee late notice"
)
WORDS = _VOCABULARY.split()


def system_prompt(topic: str, seed: int) -> str:
    rng = random.Random(seed)
    rules = [
        f"Rule {i}: " + " ".join(rng.choice(WORDS) for _ in range(14)) + "." for i in range(1, 60)
    ]
    return f"You are the assistant of {topic}. Follow the house rules.\n" + "\n".join(rules)


def gateway_config(state_cache_mb: int) -> Path:
    config = Path(tempfile.mkdtemp()) / "nearline.yaml"
    config.write_text(
        yaml.safe_dump(
            {"server": {"log_level": "warning"}, "local": {"state_cache_mb": state_cache_mb}}
        )
    )
    return config


def turn(url: str, system: str, question: str) -> tuple[float, int, int]:
    body = {
        "model": "smollm2-135m-instruct",
        "stream": True,
        "max_tokens": 4,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
    }
    answer = stream_chat(url, body, {"Cache-Control": "no-store"})
    ttft, usage = answer.first_content_ms, answer.usage
    return ttft, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--rounds-without",
        type=int,
        default=3,
        help="rounds for the gateway without saved states (each turn is cold)",
    )
    args = parser.parse_args()
    prompts = [system_prompt(topic, i) for i, topic in enumerate(TOPICS)]
    with (
        serve_in_process(gateway_config(512)) as saved,
        serve_in_process(gateway_config(0)) as unsaved,
    ):
        gateways = {"saved KV states (default)": saved, "no saved states": unsaved}
        results: dict[str, list[tuple[int, float, int, int]]] = {name: [] for name in gateways}
        for round_no in range(max(args.rounds, args.rounds_without)):
            for tenant, system in enumerate(prompts):
                question = f"Question {round_no}: what does rule {round_no + tenant + 1} say?"
                for name, url in gateways.items():
                    limit = args.rounds if name.startswith("saved") else args.rounds_without
                    if round_no < limit:
                        results[name].append((round_no, *turn(url, system, question)))
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
            f"{os.getloadavg()[0]:.2f} | 3 tenants interleaved | prompt tokens "
            f"{sorted({r[2] for r in results['no saved states']})}"
        )
        print(
            "| gateway | cold TTFT p50 (ms) | warm TTFT p50 (ms) | warm TTFT p95 (ms) "
            "| warm turns | median cached prompt tokens (warm) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, rows in results.items():
            cold = [r[1] for r in rows if r[0] == 0]
            warm = [r[1] for r in rows if r[0] > 0]
            cached = sorted(r[3] for r in rows if r[0] > 0)
            print(
                f"| {name} | {percentile(cold, 0.5):.0f} | {percentile(warm, 0.5):.0f} | "
                f"{percentile(warm, 0.95):.0f} | {len(warm)} | {cached[len(cached) // 2]} |"
            )


if __name__ == "__main__":
    main()
