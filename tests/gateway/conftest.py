"""Gateway fixtures.

Tests marked as using the mock upstream talk to ``nearline``'s own mock provider (a real
HTTP server that behaves like a paid OpenAI-compatible API); everything else runs the real
local model (SmolLM2-135M-Instruct through llama-cpp-python).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nearline.config import hash_api_key
from nearline.testing import serve_in_process
from nearline.testing.mock_upstream import MockBehaviour

ALPHA_KEY = "sk-test-alpha"
BETA_KEY = "sk-test-beta"  # may only use the mock model
LOCAL_MODEL = "smollm2-135m-instruct"
MOCK_MODEL = "mock-fast"


@pytest.fixture(scope="session")
def mock_upstream_url(mock_upstreams) -> str:
    """A fast, well-behaved mock upstream shared by the session (the one ``make_gateway``
    uses by default)."""
    root: str = mock_upstreams.shared(MockBehaviour(ttft_s=0.01, tokens_per_s=2000)).root
    return root


def gateway_config(mock_url: str, log_path: Path) -> dict[str, object]:
    return {
        "server": {"log_level": "warning", "max_body_bytes": 64_000},
        "request_log": {"sqlite_path": str(log_path)},
        # The model must really answer every request here (cache tiers have their own tests).
        "cache": {"exact": {"enabled": False}, "semantic": {"enabled": False}},
        "auth": {
            "keys": [
                {"sha256": hash_api_key(ALPHA_KEY), "tenant": "alpha"},
                {"sha256": hash_api_key(BETA_KEY), "tenant": "beta", "models": [MOCK_MODEL]},
            ]
        },
        "providers": {"mock": {"base_url": f"{mock_url}/v1", "read_timeout_s": 10}},
        "models": {
            LOCAL_MODEL: {"provider": "local"},
            MOCK_MODEL: {"provider": "mock", "upstream_model": "mock-1"},
        },
    }


@pytest.fixture(scope="session")
def gateway_url(mock_upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``nearline serve`` process, started from its CLI with a YAML config."""
    folder = tmp_path_factory.mktemp("gateway")
    config_path = folder / "nearline.yaml"
    config = gateway_config(mock_upstream_url, folder / "requests.sqlite")
    config_path.write_text(yaml.safe_dump(config))
    with serve_in_process(config_path) as url:
        yield url


@dataclass(frozen=True)
class Gateway:
    url: str
    alpha_key: str = ALPHA_KEY
    beta_key: str = BETA_KEY
    local_model: str = LOCAL_MODEL
    mock_model: str = MOCK_MODEL

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture(scope="session")
def gateway(gateway_url: str) -> Gateway:
    return Gateway(gateway_url)
