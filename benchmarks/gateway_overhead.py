"""What does the gateway add? Open-loop load through nearline vs straight to the upstream.

Starts ``nearline mock-upstream`` and ``nearline serve`` (pointing at it) as separate
processes, then for each rate and mode sends requests on a fixed schedule (open loop: a
request starts on time whether or not earlier ones finished, so queueing shows up as
latency) first straight to the mock, then through the gateway, phase by phase in one run.
Latency is measured from the scheduled start to the last byte. Prints p50/p99 for both, the
added latency, errors, and the gateway's CPU time and peak RSS.

    .venv/bin/python benchmarks/gateway_overhead.py            # 100, 500, 1000 req/s, 5 s each
    .venv/bin/python benchmarks/gateway_overhead.py --rates 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from nearline.testing import free_port, wait_until_ready

sys.path.insert(0, str(Path(__file__).parent))
from workload import start_nearline

BODY = {
    "model": "mock",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
}


@dataclass
class Phase:
    target: str
    rate: int
    stream: bool
    latencies_ms: list[float]
    errors: int

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_phase(url: str, rate: int, seconds: float, stream: bool, target: str) -> Phase:
    body = dict(BODY, stream=stream)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=2000, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append((time.perf_counter() - scheduled) * 1000)

        total = int(rate * seconds)
        start = time.perf_counter() + 0.05
        tasks = []
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return Phase(target, rate, stream, latencies, errors)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    args = parser.parse_args()

    mock_port, gateway_port = free_port(), free_port()
    mock = start_nearline(
        [
            "mock-upstream",
            "--port",
            str(mock_port),
            "--ttft-ms",
            str(args.ttft_ms),
            "--tokens-per-s",
            "2000",
            "--tokens",
            "8",
        ]
    )
    config = Path(tempfile.mkdtemp()) / "nearline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"log_level": "warning"},
                # every request must reach the upstream
                "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
                "request_log": {"sqlite_path": str(config.parent / "requests.sqlite")},
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
    gateway = start_nearline(["serve", "--config", str(config), "--port", str(gateway_port)])
    try:
        mock_url = f"http://127.0.0.1:{mock_port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_until_ready(mock_url, path="/v1/models")
        wait_until_ready(gateway_url)
        for url in (mock_url, gateway_url):  # warm connections and code paths
            await run_phase(url, 50, 1, False, "warm-up")
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
            f"{os.getloadavg()[0]:.2f} | mock ttft {args.ttft_ms:.0f} ms, 8 tokens at 2000/s | "
            f"{args.seconds:.0f} s per phase"
        )
        print(
            "| rate | mode | direct p50 | direct p99 | via nearline p50 | via nearline p99 "
            "| added p50 | added p99 | errors direct/nearline | gateway CPU | gateway peak RSS |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate in args.rates:
            for stream in (False, True):
                direct = await run_phase(mock_url, rate, args.seconds, stream, "direct")
                cpu_before = proc_cpu_s(gateway.pid)
                began = time.perf_counter()
                via = await run_phase(gateway_url, rate, args.seconds, stream, "nearline")
                cpu = (proc_cpu_s(gateway.pid) - cpu_before) / (time.perf_counter() - began)
                print(
                    f"| {rate}/s | {'stream' if stream else 'json'} "
                    f"| {direct.pct(0.5):.1f} | {direct.pct(0.99):.1f} "
                    f"| {via.pct(0.5):.1f} | {via.pct(0.99):.1f} "
                    f"| {via.pct(0.5) - direct.pct(0.5):+.1f} "
                    f"| {via.pct(0.99) - direct.pct(0.99):+.1f} "
                    f"| {direct.errors}/{via.errors} | {cpu * 100:.0f}% "
                    f"| {proc_peak_rss_mb(gateway.pid):.0f} MB |",
                    flush=True,
                )
    finally:
        for process in (gateway, mock):
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    asyncio.run(main())
