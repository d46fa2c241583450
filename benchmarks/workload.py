"""A realistic request trace for cache and progressive benchmarks (shared by both scripts).

Popular questions follow a Zipf law; a popular question comes back either word for word
(exact repeat) or as its labelled paraphrase from the Quora dev pairs (semantic repeat); the
long tail is made of questions asked once. Several tenants ask, each with its own popular
set drawn from the same pool, so a tenant's repeat never matches another tenant's entry.
"""

from __future__ import annotations

import asyncio
import csv
import random
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from nearline.config import hash_api_key
from nearline.testing import free_port, serve_in_process, wait_until_ready

PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic" / "qqp_pairs_dev.csv"


@dataclass(frozen=True)
class TraceRequest:
    tenant: str
    question: str
    kind: str  # first (first time asked), exact (word-for-word repeat), paraphrase, unique


def load_duplicate_pairs(path: Path = PAIRS) -> tuple[list[tuple[str, str]], list[str]]:
    """(question, paraphrase) pairs labelled duplicates, and questions from non-duplicates."""
    duplicates: list[tuple[str, str]] = []
    singles: list[str] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["is_duplicate"] == "1":
                duplicates.append((row["question1"], row["question2"]))
            else:
                singles.append(row["question1"])
    return duplicates, singles


def build_trace(
    requests: int = 600,
    tenants: int = 3,
    popular: int = 40,
    repeat_share: float = 0.6,
    paraphrase_share: float = 0.62,
    zipf_s: float = 1.1,
    seed: int = 7,
) -> list[TraceRequest]:
    """``repeat_share`` of requests draw from each tenant's popular set (Zipf); of the
    repeats of an already-asked question, ``paraphrase_share`` use the paraphrase."""
    rng = random.Random(seed)
    duplicates, singles = load_duplicate_pairs()
    rng.shuffle(duplicates)
    rng.shuffle(singles)
    weights = [1 / (rank + 1) ** zipf_s for rank in range(popular)]
    pools = [duplicates[t * popular : (t + 1) * popular] for t in range(tenants)]
    asked: set[tuple[int, int]] = set()
    tail = iter(singles)
    trace: list[TraceRequest] = []
    for _ in range(requests):
        tenant = rng.randrange(tenants)
        name = f"tenant-{tenant}"
        if rng.random() < repeat_share:
            index = rng.choices(range(popular), weights)[0]
            question, paraphrase = pools[tenant][index]
            if (tenant, index) not in asked:
                asked.add((tenant, index))
                trace.append(TraceRequest(name, question, "first"))
            elif rng.random() < paraphrase_share:
                trace.append(TraceRequest(name, paraphrase, "paraphrase"))
            else:
                trace.append(TraceRequest(name, question, "exact"))
        else:
            trace.append(TraceRequest(name, next(tail), "unique"))
    return trace


def describe(trace: list[TraceRequest]) -> str:
    kinds = {
        kind: sum(r.kind == kind for r in trace)
        for kind in ("first", "exact", "paraphrase", "unique")
    }
    total = len(trace)
    return ", ".join(f"{kind} {count} ({count / total:.0%})" for kind, count in kinds.items())


def start_nearline(args: list[str]) -> subprocess.Popen[bytes]:
    """``nearline ARGS`` in a process of its own (the gateway, the mock upstream)."""
    return subprocess.Popen(
        [sys.executable, "-m", "nearline", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def gateway_config(folder: Path, name: str, mock_port: int, **sections: Any) -> Path:
    """A ``nearline serve`` config for the trace: its tenants' keys, a request log of its
    own, the mock upstream as provider ``paid``; ``sections`` add or replace sections."""
    path = folder / f"nearline-{name}.yaml"
    config: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "auth": {"keys": tenant_keys()},
        "request_log": {"sqlite_path": str(folder / f"log-{name}.sqlite")},
        "providers": {"paid": {"base_url": f"http://127.0.0.1:{mock_port}/v1"}},
        **sections,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def mock_and_gateways(
    mock_flags: list[str], configs: Callable[[int], dict[str, Path]]
) -> Iterator[dict[str, str]]:
    """Start ``nearline mock-upstream MOCK_FLAGS`` and one ``nearline serve`` per config that
    ``configs(mock_port)`` names; yield each gateway's URL by name once all are ready."""
    mock_port = free_port()
    mock = start_nearline(["mock-upstream", "--port", str(mock_port), *mock_flags])
    try:
        wait_until_ready(f"http://127.0.0.1:{mock_port}", path="/v1/models")
        with ExitStack() as gateways:
            yield {
                name: gateways.enter_context(serve_in_process(config))
                for name, config in configs(mock_port).items()
            }
    finally:
        mock.terminate()
        mock.wait(timeout=20)


async def replay(
    trace: list[TraceRequest],
    concurrency: int,
    handle: Callable[[httpx.AsyncClient, TraceRequest], Awaitable[None]],
) -> None:
    """Send the trace in order from ``concurrency`` clients sharing one HTTP client."""
    queue: asyncio.Queue[TraceRequest] = asyncio.Queue()
    for request in trace:
        queue.put_nowait(request)
    async with httpx.AsyncClient(timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                await handle(client, queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def tenant_keys(tenants: int = 3) -> list[dict[str, str]]:
    """``auth.keys`` for the trace's tenants: ``sk-tenant-N`` → ``tenant-N``."""
    return [
        {"sha256": hash_api_key(f"sk-tenant-{t}"), "tenant": f"tenant-{t}"} for t in range(tenants)
    ]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class StreamedAnswer:
    first_content_ms: float | None  # request sent -> first chunk with answer text
    total_ms: float
    chunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usage(self) -> dict[str, Any]:
        return next((c["usage"] for c in reversed(self.chunks) if c.get("usage")), {})

    @property
    def content_chunks(self) -> int:
        return sum(
            1 for c in self.chunks if c.get("choices") and c["choices"][0]["delta"].get("content")
        )


def stream_chat(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> StreamedAnswer:
    """POST a streaming chat completion over a plain socket with TCP_NODELAY, one write.

    httpx writes the request head and body separately without TCP_NODELAY; on this machine
    that adds ~40 ms (Nagle waiting on a delayed ACK) before the server even sees the body,
    with or without nearline in the path, which would hide what the server itself does.
    """
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(body)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\n{extra}"
        f"Connection: close\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    answer = StreamedAnswer(first_content_ms=None, total_ms=0.0)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(head + payload)
        pending = b""
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: {"):
                    chunk = orjson.loads(line[6:])
                    answer.chunks.append(chunk)
                    content = chunk.get("choices") and chunk["choices"][0]["delta"].get("content")
                    if content and answer.first_content_ms is None:
                        answer.first_content_ms = (time.perf_counter() - start) * 1000
        answer.total_ms = (time.perf_counter() - start) * 1000
    return answer
