"""Online semantic caching on a trace whose wrong answers are measurable (issue 18 point 5).

Intent clusters come from the labelled duplicates of ../shared/data/semantic/qqp_pairs_dev.csv
(connected components of the duplicate pairs), and the upstream answers *per cluster*: every
question of one cluster gets the same answer, every other question another one. So a
semantic hit is wrong exactly when the cached answer belongs to another cluster.

The trace (seeded): Zipf-popular intents (exponent 1.0 over the multi-question clusters)
asked many times, each time as a paraphrase drawn from the cluster; hard negatives — a
labelled *non*-duplicate near twin of a popular intent's question, asked after it; a long
tail of questions asked once. It is replayed one request at a time through a real
``nearline serve`` (exact tier on, as shipped) for each configuration: the static rule,
and learned thresholds at each ``--bounds`` value in each ``--modes`` (``error_bound``
per-match or per-request), all against one in-process upstream.

    .venv/bin/python benchmarks/semantic_online.py [--requests 4000] [--bounds 0.01,0.05]
        [--modes per-match,per-request] [--verify-rate 0.3] [--floor 0.86]

Prints, per configuration: semantic hits, semantic hit rate and served-wrong rate (per
request and per hit) for the whole trace and per quarter, learned hits, verifications and
their upstream tokens/cost, upstream calls.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nearline.testing import serve_in_process, serve_in_thread

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic" / "qqp_pairs_dev.csv"
_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "gale", "harbor", "ivory", "juniper",
    "kestrel", "lumen",
)  # fmt: skip


@dataclass(frozen=True)
class Asked:
    question: str
    cluster: int
    kind: str  # paraphrase | hard-negative | tail


@dataclass
class Intents:
    cluster_of: dict[str, int]
    multi: list[list[str]]  # clusters with two or more questions
    singles: list[str]
    twins: dict[str, list[str]]  # question -> labelled non-duplicates of another cluster


def load_intents(path: Path) -> Intents:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in rows:
        a, b = row["question1"].strip(), row["question2"].strip()
        if row["is_duplicate"] == "1":
            parent[find(a)] = find(b)
        else:
            find(a), find(b)
    members: dict[str, list[str]] = defaultdict(list)
    for question in sorted(parent):
        members[find(question)].append(question)
    cluster_of: dict[str, int] = {}
    multi: list[list[str]] = []
    singles: list[str] = []
    for index, root in enumerate(sorted(members)):
        for question in members[root]:
            cluster_of[question] = index
        if len(members[root]) > 1:
            multi.append(members[root])
        else:
            singles.append(members[root][0])
    twins: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        a, b = row["question1"].strip(), row["question2"].strip()
        if row["is_duplicate"] == "0" and cluster_of[a] != cluster_of[b]:
            twins[a].append(b)
            twins[b].append(a)
    return Intents(cluster_of, multi, singles, dict(twins))


def build_trace(
    intents: Intents, requests: int, seed: int, *, tail: float = 0.2, negatives: float = 0.1
) -> list[Asked]:
    rng = random.Random(seed)
    popular = list(intents.multi)
    rng.shuffle(popular)
    weights = [1.0 / (rank + 1) for rank in range(len(popular))]
    singles = list(intents.singles)
    rng.shuffle(singles)
    singles_set = set(singles)
    asked_once: set[str] = set()
    trace: list[Asked] = []
    seen: set[str] = set()
    while len(trace) < requests:
        roll = rng.random()
        if roll < tail and singles:
            question = singles.pop()
            if question in seen:
                continue
            trace.append(Asked(question, intents.cluster_of[question], "tail"))
        else:
            group = rng.choices(popular, weights)[0]
            if roll < tail + negatives:  # a near twin of a popular question already asked
                asked = [q for q in seen if intents.twins.get(q) and q not in singles_set]
                if not asked:
                    continue
                twin = rng.choice(intents.twins[rng.choice(sorted(asked))])
                question, kind = twin, "hard-negative"
            else:
                question, kind = rng.choice(group), "paraphrase"
            trace.append(Asked(question, intents.cluster_of[question], kind))
        seen.add(trace[-1].question)
        asked_once.add(trace[-1].question)
    return trace


def answer_of(cluster: int) -> str:
    rng = random.Random(cluster)
    words = " ".join(rng.choice(_WORDS) for _ in range(18))
    return f"Intent {cluster}: {words}."


@dataclass
class UpstreamStats:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def cluster_upstream(cluster_of: dict[str, int], stats: UpstreamStats) -> Starlette:
    """An OpenAI-compatible upstream that answers each question with its cluster's answer."""

    async def chat(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        question = str(payload["messages"][-1]["content"]).strip()
        cluster = cluster_of.get(
            question, -1 - int(hashlib.sha1(question.encode()).hexdigest()[:6], 16)
        )
        text = answer_of(cluster)
        usage = {
            "prompt_tokens": len(question.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(question.split()) + len(text.split()),
        }
        stats.calls += 1
        stats.prompt_tokens += usage["prompt_tokens"]
        stats.completion_tokens += usage["completion_tokens"]
        base = {"id": "chatcmpl-cluster", "created": int(time.time()), "model": "cluster-1"}
        if not payload.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            return JSONResponse(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        async def events() -> AsyncIterator[bytes]:
            for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield b"data: " + orjson.dumps(last) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "cluster-1", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def gateway_config(folder: Path, name: str, upstream: str, semantic: dict[str, Any]) -> Path:
    path = folder / f"nearline-{name}.yaml"
    config = {
        "server": {"log_level": "warning"},
        "request_log": {"enabled": False},
        "providers": {"up": {"base_url": f"{upstream}/v1"}},
        "models": {
            "m": {"provider": "up", "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
        },
        "cache": {"semantic": semantic},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Run:
    name: str
    sources: list[str] = field(default_factory=list)
    wrong: list[bool] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    upstream_calls: int = 0
    seconds: float = 0.0


def scrape(url: str) -> dict[str, float]:
    wanted = (
        "nearline_semantic_hits_total",
        "nearline_semantic_outcomes_total",
        "nearline_semantic_verification_cost_usd_total",
        "nearline_semantic_verification_tokens_total",
        "nearline_semantic_agreement_rate",
    )
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def replay(url: str, trace: list[Asked], run: Run) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for asked in trace:
            body = {"model": "m", "messages": [{"role": "user", "content": asked.question}]}
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
            run.sources.append(response.headers.get("x-nearline-source", "?"))
            run.wrong.append(text != answer_of(asked.cluster))


def report(runs: list[Run], trace: list[Asked]) -> None:
    n = len(trace)
    print(f"\ntrace: {n} requests, {Counter(a.kind for a in trace)}")
    questions, intents = len({a.question for a in trace}), len({a.cluster for a in trace})
    print(f"distinct questions {questions}, intents {intents}")
    print(
        "\n| config | semantic hits | hit rate | served wrong (per request) | wrong per hit "
        "| learned hits | exact hits | verifications | verification tokens "
        "| verification cost USD | upstream calls |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    static_hits = None
    for run in runs:
        hits = [s == "semantic" for s in run.sources]
        wrong = sum(h and w for h, w in zip(hits, run.wrong, strict=True))
        total_hits = sum(hits)
        static_hits = total_hits if static_hits is None else static_hits
        m = run.metrics
        learned = m.get('nearline_semantic_hits_total{rule="learned"}', 0.0)
        paid = sum(
            v
            for k, v in m.items()
            if k.startswith("nearline_semantic_outcomes_total") and 'kind="paid"' in k
        )
        tokens = sum(
            v for k, v in m.items() if k.startswith("nearline_semantic_verification_tokens_total")
        )
        cost = m.get("nearline_semantic_verification_cost_usd_total", 0.0)
        print(
            f"| {run.name} | {total_hits} | {total_hits / n:.4f} | {wrong / n:.4f} | "
            f"{wrong / max(1, total_hits):.4f} | {learned:.0f} | {run.sources.count('exact')} | "
            f"{paid:.0f} | {tokens:.0f} | {cost:.4f} | {run.upstream_calls} |"
        )
    print("\nsemantic hits (wrong) per quarter of the trace:\n")
    print("| config | " + " | ".join(f"Q{q + 1}" for q in range(4)) + " | 2nd half vs static |")
    print("|---|---|---|---|---|---|")
    quarters = [range(q * n // 4, (q + 1) * n // 4) for q in range(4)]
    static_late = None
    for run in runs:
        cells, late = [], 0
        for q, span in enumerate(quarters):
            quarter_hits = sum(run.sources[i] == "semantic" for i in span)
            quarter_wrong = sum(run.sources[i] == "semantic" and run.wrong[i] for i in span)
            late += quarter_hits if q >= 2 else 0
            cells.append(f"{quarter_hits} ({quarter_wrong})")
        static_late = late if static_late is None else static_late
        ratio = late / max(1, static_late)
        print(f"| {run.name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    for run in runs:
        outcomes = {
            key.split("{")[1].rstrip("}"): value
            for key, value in run.metrics.items()
            if "outcomes" in key
        }
        print(f"{run.name}: {run.seconds:.0f} s, outcomes {outcomes}")


def configs(
    bounds: list[float], verify_rate: float, floor: float, modes: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "static", {}
    for mode in modes:
        for bound in bounds:
            semantic = {
                "max_error_rate": bound,
                "error_bound": mode,
                "verify_rate": verify_rate,
                "verify_per_minute": 0,
                "near_threshold": floor,  # the lowest candidate the learned rule considers
            }
            yield f"{mode} {bound:g}", semantic


def trace_parser(description: str, modes: str) -> argparse.ArgumentParser:
    """The options of the trace and the learned runs, shared with semantic_online_sim."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--bounds", default="0.01,0.05")
    parser.add_argument("--verify-rate", type=float, default=0.3)
    parser.add_argument("--floor", type=float, default=0.86, help="learned runs' near_threshold")
    parser.add_argument("--modes", default=modes)
    return parser


def main() -> None:
    parser = trace_parser(__doc__.split("\n\n")[0], "per-match,per-request")
    args = parser.parse_args()

    intents = load_intents(args.data)
    trace = build_trace(intents, args.requests, args.seed)
    runs = []
    bounds = [float(b) for b in args.bounds.split(",") if b]
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        stats = UpstreamStats()
        upstream = stack.enter_context(serve_in_thread(cluster_upstream(intents.cluster_of, stats)))
        modes = [mode for mode in args.modes.split(",") if mode]
        for name, semantic in configs(bounds, args.verify_rate, args.floor, modes):
            config = gateway_config(Path(folder), name.replace(" ", "-"), upstream, semantic)
            with serve_in_process(config) as url:
                run, before = Run(name), stats.calls
                started = time.perf_counter()
                asyncio.run(replay(url, trace, run))
                time.sleep(1.0)  # background verifications finish
                run.seconds = time.perf_counter() - started
                run.metrics, run.upstream_calls = scrape(url), stats.calls - before
            runs.append(run)
            print(f"{name}: done in {run.seconds:.0f} s", file=sys.stderr)
    report(runs, trace)


if __name__ == "__main__":
    main()
