"""``gateway_overhead.py --profile DIR``: py-spy samples of the gateway, grouped by layer."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# --- the profile: py-spy samples grouped by layer ----------------------------------------

# The innermost frame whose file matches names the layer a sample is charged to (the
# standard library and C code it calls are charged to the layer that called them).
LAYERS = (
    ("nearline/gateway/providers/", "upstream client: nearline (SSE parse, payload)"),
    ("aiohttp/", "upstream client: aiohttp"),
    ("nearline/gateway/serving/sse.py", "SSE frames / JSON body (sse.py)"),
    ("nearline/gateway/telemetry/", "telemetry: metrics, request log (nearline)"),
    ("prometheus_client/", "telemetry: prometheus_client"),
    ("opentelemetry/", "telemetry: opentelemetry"),
    ("nearline/gateway/limits/", "limits (governor)"),
    ("nearline/gateway/serving/", "service + pipeline + catalogue"),
    ("nearline/gateway/cache/", "cache tiers"),
    ("nearline/gateway/routing/", "routing"),
    ("nearline/embed/", "embedding (semantic tier)"),
    ("onnxruntime/", "embedding (semantic tier)"),
    ("nearline/gateway/api/", "routes + middlewares (nearline)"),
    ("nearline/core/", "core (request model, events, errors)"),
    ("pydantic", "pydantic validation / dump"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn (HTTP server, socket writes)"),
    ("asyncio/", "event loop (asyncio/uvloop)"),
    ("uvloop/", "event loop (asyncio/uvloop)"),
)


class Profiler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, list[Path]] = defaultdict(list)

    def start(self, pid: int, key: str) -> tuple[subprocess.Popen[bytes], str]:
        path = self.folder / f"{key}-{len(self.files[key])}.txt"
        self.files[key].append(path)
        spy = Path(sys.executable).parent / "py-spy"
        command = [str(spy), "record", "--pid", str(pid), "--rate", "250"]
        command += ["--format", "raw", "--output", str(path), "--nonblocking"]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), key

    @staticmethod
    def stop(sampling: tuple[subprocess.Popen[bytes], str]) -> None:
        process, _ = sampling
        process.send_signal(2)  # py-spy writes its output on SIGINT
        process.wait(timeout=30)

    def report(self) -> None:
        for key, paths in self.files.items():
            shares: dict[str, int] = defaultdict(int)
            total = 0
            for path in paths:
                if not path.exists():
                    continue
                for line in path.read_text().splitlines():
                    stack, _, samples = line.rpartition(" ")
                    if not samples.isdigit():
                        continue
                    total += int(samples)
                    shares[layer_of(stack)] += int(samples)
            print(f"\n# profile {key}: {total} samples (py-spy, 250/s, active threads)")
            print("| layer | share of CPU samples |\n|---|---:|")
            for layer, count in sorted(shares.items(), key=lambda item: -item[1]):
                print(f"| {layer} | {count / max(total, 1) * 100:.1f}% |")


def layer_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for needle, layer in LAYERS:
            if needle in frame:
                return layer
    return "other (threads, start-up, stdlib)"
