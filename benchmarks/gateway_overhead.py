"""What does the gateway add? Open-loop load through nearline vs straight to the upstream.

Starts ``nearline mock-upstream`` and ``nearline serve`` (pointing at it) as separate
processes, then for each rate, cache setting and mode sends requests on a fixed schedule
(open loop: a request starts on time whether or not earlier ones finished, so queueing shows
up as latency) first straight to the mock, then through each gateway, phase by phase in one
run. Latency is measured from the scheduled start to the last byte.

**The figure is the gateway's CPU time per request**: the CPU seconds (user + system, read
from ``/proc/<pid>/stat`` of the gateway and every process under it) spent during a phase
and until the gateway is idle again after it, divided by the requests the phase sent. It
holds on a machine shared with other work, where latency does not. Cache settings: ``off``
(both tiers off: every request is proxied), ``on`` (exact and semantic tiers on, every
prompt new: lookups miss, answers are stored) and ``hit`` (the ``on`` gateway, the same
request every time: the exact tier answers).

    .venv/bin/python benchmarks/gateway_overhead.py            # 100, 500, 1000 req/s, 5 s each
    .venv/bin/python benchmarks/gateway_overhead.py --rates 300 --repeat 3 --cache off
    .venv/bin/python benchmarks/gateway_overhead.py --rates 300 --variant base=/tmp/base/src
    .venv/bin/python benchmarks/gateway_overhead.py --rates 300 --workers 1 2
    .venv/bin/python benchmarks/gateway_overhead.py --rates 150 --profile /tmp/prof
    .venv/bin/python benchmarks/gateway_overhead.py --rates 300 --cache off \
        --litellm /work/peer-venvs/litellm/bin/litellm

``--variant LABEL=SRC`` adds a gateway run from another source tree (``SRC`` goes first on
``PYTHONPATH``: a ``git worktree`` of an earlier commit), measured beside this tree's in the
same phases. ``--profile DIR`` samples this tree's gateway with py-spy during its phases
and prints the share of CPU samples per layer. ``--litellm PATH`` (or
``$NEARLINE_BENCH_LITELLM``) runs LiteLLM's proxy as a peer in the ``off`` rows, against the
same mock, measured the same way (``gateway_peer``); without it a note says it was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway_peer import LABEL as PEER
from gateway_peer import litellm_binary, litellm_version, start_litellm
from gateway_profile import Profiler
from nearline.testing import free_port, wait_until_ready

MODES = ("json", "stream")
CACHES = ("off", "on", "hit")


@dataclass
class Phase:
    latencies_ms: list[float]
    errors: int
    sent: int

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def body_for(index: int, stream: bool, cache: str) -> dict[str, Any]:
    # "hit" repeats one request (the exact tier answers); otherwise every prompt is new
    question = "What is the capital of France?" if cache == "hit" else f"Question {index}: why?"
    return {
        "model": "mock",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "stream": stream,
    }


async def run_phase(url: str, rate: int, seconds: float, stream: bool, cache: str) -> Phase:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=2000, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(scheduled: float, body: dict[str, Any]) -> None:
            nonlocal errors
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            latencies.append((time.perf_counter() - scheduled) * 1000)

        total = int(rate * seconds)
        start = time.perf_counter() + 0.05
        tasks = []
        offset = int(time.time() * 1000) * 10_000  # new prompts in every phase
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = body_for(offset + index, stream, cache)
            tasks.append(asyncio.create_task(one(scheduled, body)))
        await asyncio.gather(*tasks)
    return Phase(latencies, errors, total)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every process under it (uvicorn's workers)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            try:
                pids.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
        index += 1
    return pids


def tree_cpu_s(pid: int) -> float:
    total = 0
    for each in tree_pids(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def settle(pid: int, timeout_s: float = 120.0) -> None:
    """Wait until the process tree is idle (under 10 % of a core for 0.3 s): a gateway that
    fell behind finishes, or drops, what it queued before the next phase starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        start = tree_cpu_s(pid)
        await asyncio.sleep(0.3)
        if tree_cpu_s(pid) - start < 0.03:
            return


def tree_rss_mb(pid: int) -> float:
    total = 0
    for each in tree_pids(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Gateway:
    label: str
    cache: str  # "off" or "on"
    process: subprocess.Popen[bytes]
    url: str


def start_process(args: list[str], src: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "nearline", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def gateway_config(folder: Path, name: str, mock_port: int, cache: str) -> Path:
    on = cache == "on"
    config = folder / f"nearline-{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"log_level": "warning"},
                "cache": {"exact": {"enabled": on}, "semantic": {"enabled": on}},
                "request_log": {"sqlite_path": str(folder / f"requests-{name}.sqlite")},
                "providers": {
                    "mock": {
                        "base_url": f"http://127.0.0.1:{mock_port}/v1",
                        "max_connections": 2000,
                    }
                },
                "models": {"mock": {"provider": "mock", "upstream_model": "mock-1"}},
            }
        )
    )
    return config


@dataclass
class Row:
    rate: int
    cache: str
    mode: str
    direct: list[Phase] = field(default_factory=list)
    via: dict[str, list[Phase]] = field(default_factory=lambda: defaultdict(list))
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu_share: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def paired(values: list[float], reference: list[float]) -> str:
    """The median ratio of runs made side by side (the same repetition)."""
    ratios = [v / r for v, r in zip(values, reference, strict=True) if r > 0]
    return f"{median(ratios) - 1:+.0%}" if ratios else ""


def print_rows(
    rows: list[Row], labels: list[str], reference: str, rss: dict[tuple[str, str], float]
) -> None:
    print(
        "| rate | cache | mode | gateway | CPU ms/request (median; each run) | gateway CPU "
        "| direct p50 | direct p99 | via p50 | via p99 | added p50 | added p99 "
        f"| errors direct/via | peak RSS | CPU vs {reference} (median of paired runs) |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        d50 = median([p.pct(0.5) for p in row.direct])
        d99 = median([p.pct(0.99) for p in row.direct])
        for label in labels:
            phases = row.via[label]
            if not phases:
                continue
            v50, v99 = median([p.pct(0.5) for p in phases]), median([p.pct(0.99) for p in phases])
            runs = ", ".join(f"{v:.2f}" for v in row.cpu_ms[label])
            print(
                f"| {row.rate}/s | {row.cache} | {row.mode} | {label} "
                f"| **{median(row.cpu_ms[label]):.2f}** ({runs}) "
                f"| {median(row.cpu_share[label]) * 100:.0f}% "
                f"| {d50:.1f} | {d99:.1f} | {v50:.1f} | {v99:.1f} "
                f"| {v50 - d50:+.1f} | {v99 - d99:+.1f} "
                f"| {sum(p.errors for p in row.direct)}/{sum(p.errors for p in phases)} "
                f"| {rss.get((label, 'on' if row.cache == 'hit' else row.cache), 0):.0f} MB "
                f"| {paired(row.cpu_ms[label], row.cpu_ms[reference])} |",
                flush=True,
            )


def print_peer(rows: list[Row], nearline: str) -> None:
    """nearline beside the peer, row by row: CPU per request (the ratio is the median of
    the runs made side by side), latency and errors."""
    print(f"\n# {nearline} beside {PEER}, the same phases (ms; errors of requests sent)")
    print(
        f"| rate | mode | CPU ms/req {nearline} | CPU ms/req {PEER} | {PEER} / {nearline} CPU "
        f"| p50 {nearline} | p50 {PEER} | p99 {nearline} | p99 {PEER} "
        f"| errors {nearline} | errors {PEER} |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ours, theirs = row.via[nearline], row.via[PEER]
        if not theirs:
            continue
        ratios = [
            t / o for t, o in zip(row.cpu_ms[PEER], row.cpu_ms[nearline], strict=True) if o > 0
        ]
        print(
            f"| {row.rate}/s | {row.mode} | {median(row.cpu_ms[nearline]):.2f} "
            f"| {median(row.cpu_ms[PEER]):.2f} | **{median(ratios):.1f}x** "
            f"| {median([p.pct(0.5) for p in ours]):.1f} "
            f"| {median([p.pct(0.5) for p in theirs]):.1f} "
            f"| {median([p.pct(0.99) for p in ours]):.1f} "
            f"| {median([p.pct(0.99) for p in theirs]):.1f} "
            f"| {sum(p.errors for p in ours)}/{sum(p.sent for p in ours)} "
            f"| {sum(p.errors for p in theirs)}/{sum(p.sent for p in theirs)} |",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--cache", nargs="+", choices=CACHES, default=list(CACHES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="runs of every phase (medians)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="serve --workers")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct phases")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--litellm", default=None, metavar="PATH", help="LiteLLM binary (peer)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    mock_port = free_port()
    mock = start_process(
        [
            *("mock-upstream", "--port", str(mock_port), "--ttft-ms", str(args.ttft_ms)),
            *("--tokens-per-s", "2000", "--tokens", "8"),
        ]
    )
    sources: list[tuple[str, str | None, int]] = [
        (f"this tree{'' if n == 1 else f' workers={n}'}", None, n) for n in args.workers
    ]
    for spec in args.variant:
        label, _, src = spec.partition("=")
        sources.append((label, src, 1))
    caches = sorted({"on" if c == "hit" else "off" for c in args.cache})
    gateways: list[Gateway] = []
    try:
        for label, src, workers in sources:
            for cache in caches:
                port = free_port()
                name = f"{len(gateways)}-{cache}"
                serve = ["serve", "--config", str(gateway_config(folder, name, mock_port, cache))]
                serve += ["--port", str(port)] + (
                    ["--workers", str(workers)] if workers > 1 else []
                )
                gateways.append(
                    Gateway(label, cache, start_process(serve, src), f"http://127.0.0.1:{port}")
                )
        labels = [label for label, _, _ in sources]
        peer = litellm_binary(args.litellm) if "off" in caches else None
        if peer is not None:
            port = free_port()
            process = start_litellm(peer, folder, mock_port, port)
            gateways.append(Gateway(PEER, "off", process, f"http://127.0.0.1:{port}"))
            labels.append(PEER)
            print(f"# peer: LiteLLM {litellm_version(peer)} ({peer}), log {folder}/litellm.log")
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_until_ready(mock_url, path="/v1/models")
        for gateway in gateways:
            path = "/health/liveliness" if gateway.label == PEER else "/readyz"
            wait_until_ready(gateway.url, timeout_s=180, path=path, process=gateway.process)
        for url in [mock_url] + [g.url for g in gateways]:  # warm connections and code paths
            for mode in MODES:
                await run_phase(url, 50, 1, mode == "stream", "hit")
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M %Z')} | {os.cpu_count()} cores | load "
            f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} | mock "
            f"ttft {args.ttft_ms:.0f} ms, 8 tokens at 2000/s | {args.seconds:.0f} s per phase "
            f"x {args.repeat} run(s) | gateways: {', '.join(labels)}",
            flush=True,
        )
        rows = [
            Row(rate, cache, mode)
            for rate in args.rates
            for cache in args.cache
            for mode in args.modes
        ]
        profiler = Profiler(args.profile) if args.profile else None
        for run in range(args.repeat):
            for row in rows:
                stream = row.mode == "stream"
                if not args.no_direct:
                    row.direct.append(
                        await run_phase(mock_url, row.rate, args.seconds, stream, row.cache)
                    )
                wanted = "on" if row.cache == "hit" else row.cache
                chosen = [g for g in gateways if g.cache == wanted]
                if run % 2:  # alternate the order: drift in the machine's load falls on both
                    chosen.reverse()
                for gateway in chosen:
                    key = f"{row.cache}-{row.mode}-{row.rate}"
                    sampling = (
                        profiler.start(gateway.process.pid, key)
                        if profiler and gateway.label == labels[0]
                        else None
                    )
                    before, began = tree_cpu_s(gateway.process.pid), time.perf_counter()
                    phase = await run_phase(gateway.url, row.rate, args.seconds, stream, row.cache)
                    elapsed = time.perf_counter() - began
                    await settle(gateway.process.pid)  # work left after the phase counts too
                    cpu = tree_cpu_s(gateway.process.pid) - before
                    if sampling is not None:
                        Profiler.stop(sampling)
                    row.via[gateway.label].append(phase)
                    row.cpu_ms[gateway.label].append(cpu / phase.sent * 1000)
                    row.cpu_share[gateway.label].append(cpu / elapsed)
        rss = {(g.label, g.cache): tree_rss_mb(g.process.pid) for g in gateways}
        print(f"# load at the end {os.getloadavg()[0]:.2f}")
        print_rows(rows, labels, sources[-1][0], rss)
        if peer is not None:
            print_peer(rows, sources[0][0])
        if profiler is not None:
            profiler.report()
    finally:
        for process in [g.process for g in gateways] + [mock]:
            process.terminate()
        for process in [g.process for g in gateways] + [mock]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    asyncio.run(main())
