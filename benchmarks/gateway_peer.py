"""A peer in the same run: LiteLLM's proxy, started against the same mock, driven by the
same load as nearline (``gateway_overhead.py --litellm PATH``).

LiteLLM is installed in a venv of its own, outside this project (its pins clash with
nearline's)::

    python3 -m venv /work/peer-venvs/litellm
    /work/peer-venvs/litellm/bin/pip install 'litellm[proxy]'

The binary comes from ``--litellm`` or ``$NEARLINE_BENCH_LITELLM``; when neither names an
executable file the peer is skipped with a one-line note. Its config turns off what a bare
proxy does not need, so that both do the same job: no master key and no database (no key
checks, no spend logs; nearline serves loopback without auth), no callbacks or telemetry,
no per-request logging, one worker process, LiteLLM's own response cache off (it is only in
the ``off`` rows: every request proxied).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

LABEL = "litellm"
ENV_VAR = "NEARLINE_BENCH_LITELLM"


def litellm_binary(option: str | None) -> Path | None:
    """The LiteLLM proxy binary to run, or ``None`` (then a note says it was skipped)."""
    chosen = option or os.environ.get(ENV_VAR)
    if not chosen:
        print(f"# peer: LiteLLM skipped (not installed: pass --litellm PATH or set ${ENV_VAR})")
        return None
    path = Path(chosen)
    if not (path.is_file() and os.access(path, os.X_OK)):
        print(f"# peer: LiteLLM skipped ({path} is not an executable file)")
        return None
    return path


def litellm_version(binary: Path) -> str:
    python = binary.parent / "python"
    try:
        done = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
    return done.stdout.strip()


def litellm_config(folder: Path, mock_port: int) -> Path:
    config = folder / "litellm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "mock",
                        "litellm_params": {
                            "model": "openai/mock-1",
                            "api_base": f"http://127.0.0.1:{mock_port}/v1",
                            "api_key": "sk-mock",
                        },
                    }
                ],
                "litellm_settings": {
                    "telemetry": False,
                    "cache": False,
                    "callbacks": [],
                    "success_callback": [],
                    "failure_callback": [],
                    "turn_off_message_logging": True,
                    "request_timeout": 30,
                    "num_retries": 0,
                },
                "general_settings": {
                    # no key, as nearline serves loopback without auth: no key checks at all
                    "dangerously_permit_weak_or_unset_master_key": True,
                    "disable_spend_logs": True,
                    "disable_error_logs": True,
                    "disable_reset_budget": True,
                    "disable_adding_master_key_hash_to_db": True,
                    "allow_requests_on_db_unavailable": True,
                    "background_health_checks": False,
                },
            }
        )
    )
    return config


def start_litellm(binary: Path, folder: Path, mock_port: int, port: int) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV", "LITELLM_MASTER_KEY")
    }
    env.update(
        {
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_MODE": "PRODUCTION",  # no .env loading
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
            "PATH": f"{binary.parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    command = [str(binary), "--config", str(litellm_config(folder, mock_port))]
    command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    log = (folder / "litellm.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
