"""Configuration is validated up front, and every request carries its tenant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nearline.config import hash_api_key, load_settings
from nearline.core.errors import ConfigError
from nearline.testing import http


def test_yaml_file_and_environment_are_merged_env_wins(tmp_path: Path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  port: 9001\n  host: 127.0.0.1\nlocal:\n  max_queue: 3\n")
    monkeypatch.setenv("NEARLINE_SERVER__PORT", "9002")
    settings = load_settings(config)
    assert settings.server.port == 9002
    assert settings.local.max_queue == 3


def test_unknown_key_in_the_file_is_named(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  prot: 9001\n")
    with pytest.raises(ConfigError, match=r"server\.prot: unknown key"):
        load_settings(config)


def test_unknown_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("NEARLINE_SERVER__PROT", "9001")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings()


def test_bad_value_is_named(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("local:\n  max_queue: -1\n")
    with pytest.raises(ConfigError, match=r"local\.max_queue"):
        load_settings(config)


def test_model_naming_an_unknown_provider_is_refused():
    with pytest.raises(ConfigError, match=r"models\.m\.provider"):
        load_settings(models={"m": {"provider": "nowhere"}})


def test_public_bind_without_keys_is_refused():
    with pytest.raises(ConfigError, match=r"server\.host"):
        load_settings(server={"host": "0.0.0.0"})


def test_cli_stops_with_a_message_naming_the_key(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  m:\n    provider: local\n    upstrem_model: x\n")
    result = subprocess.run(
        [sys.executable, "-m", "nearline", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "models.m.upstrem_model: unknown key" in result.stderr


def test_no_keys_on_loopback_means_auth_is_off(make_gateway):
    response = make_gateway().chat("hi", timeout=10)
    assert response.status_code == 200


def test_keys_are_stored_hashed_and_map_to_tenants(make_gateway):
    keys = [{"sha256": hash_api_key("sk-one"), "tenant": "one"}]
    gateway = make_gateway(auth={"keys": keys})
    ok = gateway.chat("hi", key="sk-one", timeout=10)
    assert ok.status_code == 200
    denied = gateway.chat("hi", key=hash_api_key("sk-one"), timeout=10)
    assert denied.status_code == 401  # the stored digest is not itself a key
    assert http.get(f"{gateway.v1}/models", timeout=10).status_code == 401
