"""Fixtures shared by every test package. Server helpers live in ``nearline.testing``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _request_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways built in a test write their request log under the test's tmp dir."""
    monkeypatch.setenv("NEARLINE_REQUEST_LOG__SQLITE_PATH", str(tmp_path / "requests.sqlite"))
