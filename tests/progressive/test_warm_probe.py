"""``nearline warm`` checks the gateway instead of trusting its state file (issue 15): a
question the state file says is done is probed with ``Cache-Control: only-if-cached`` and
warmed again when the gateway no longer holds it (a restart, a purge, an expiry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nearline.cli import main
from nearline.testing import http
from nearline.testing.mock_upstream import MockBehaviour

QUESTIONS = ["What is a latency budget?", "How does an exact cache work?", "Why stream tokens?"]


def warm(stack: Any, path: Path) -> int:
    return main(["warm", str(path), "--url", stack.gateway, "--model", "big"])


def test_a_state_file_does_not_hide_an_empty_cache(make_stack, tmp_path, capsys):
    with make_stack(MockBehaviour(ttft_s=0.01, tokens_per_s=400)) as stack:
        path = tmp_path / "questions.txt"
        path.write_text("\n".join(QUESTIONS) + "\n", encoding="utf-8")
        assert warm(stack, path) == 0
        assert stack.stats()["requests"] == len(QUESTIONS)
        capsys.readouterr()

        assert warm(stack, path) == 0  # still cached: the probes cost no upstream call
        assert "0 warmed, 0 already warm, 3 skipped (done before)" in (capsys.readouterr().err)
        assert stack.stats()["requests"] == len(QUESTIONS)

        purged = http.post(f"{stack.gateway}/admin/cache/purge", json={}, timeout=5)
        assert purged.status_code == 200, purged.text
        assert warm(stack, path) == 0  # the state file says done; the gateway says not cached
        assert "3 warmed, 0 already warm, 0 skipped" in capsys.readouterr().err
        assert stack.stats()["requests"] == 2 * len(QUESTIONS)
