"""The first run shows the idea (issue 15): ``nearline serve`` says where the pages are,
``nearline demo chat`` gives a preliminary then the refined answer with one command, and the
local model answers the README's question briefly, ending on its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import orjson
import pytest

from nearline.testing import free_port, http, wait_until_ready

pytestmark = pytest.mark.slow


def test_the_readme_question_gets_a_short_answer_that_ends_by_itself(make_gateway):
    gateway = make_gateway(
        models={"smollm2-135m-instruct": {"provider": "local"}},
        cache={"exact": {"enabled": False}, "semantic": {"enabled": False}},
    )
    response = gateway.chat("Say hello in French.", model="smollm2-135m-instruct", timeout=120)
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "stop", body
    assert body["usage"]["completion_tokens"] < 100
    assert "bonjour" in body["choices"][0]["message"]["content"].lower()


def test_demo_chat_shows_a_draft_then_the_refined_answer(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARLINE_")}
    env["NEARLINE_REQUEST_LOG__SQLITE_PATH"] = str(tmp_path / "requests.sqlite")
    env["NEARLINE_CACHE__SEMANTIC__ENABLED"] = "false"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nearline",
            "demo",
            "chat",
            "--port",
            str(port),
            "--ttft-ms",  # a draft's first token comes in ~0.3 s here, ~2 s on a loaded run
            "8000",
            "--tokens",
            "8",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, timeout_s=120)
        started = time.monotonic()
        response = http.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "demo-paid",
                "stream": True,
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            },
            timeout=120,
        )
        assert response.status_code == 200
        lines = response.text.splitlines()
        kinds = [
            orjson.loads(line.removeprefix(": nearline "))["type"]
            for line in lines
            if line.startswith(": nearline ")
        ]
        assert kinds and kinds[0] == "preliminary" and "replace" in kinds, response.text[:600]
        first_chunk = next(i for i, line in enumerate(lines) if re.search(r'"content":"[^"]', line))
        first_preliminary = next(i for i, line in enumerate(lines) if "preliminary" in line)
        assert first_preliminary < first_chunk
        content = "".join(
            (choice["delta"].get("content") or "")
            for line in lines
            if line.startswith("data: {")
            for choice in orjson.loads(line[6:])["choices"]
        )
        assert content[:1].isupper() and "." in content  # the mock writes sentences
        assert time.monotonic() - started >= 8  # the paid answer came after its 8 s
    finally:
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    assert f"{url}/chat" in err and f"{url}/dashboard" in err
    assert f"{url}/chat?model=demo-paid" in err
