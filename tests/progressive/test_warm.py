"""``nearline warm`` against a real gateway whose model is nearline's mock upstream; the mock's
``/mock/stats`` counts what actually reached the paid model."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from nearline.cli import main
from nearline.gateway.warm import LineError, parse_line, read_questions
from nearline.testing import eventually, http
from nearline.testing.mock_upstream import MockBehaviour

QUESTIONS = [
    "What is a latency budget?",
    "How does an exact cache work?",
    '{"question": "Why stream tokens?"}',
    '{"messages": [{"role": "system", "content": "Be brief."}, '
    '{"role": "user", "content": "What is a draft?"}], "model": "big"}',
    "What is a latency budget?",  # a repeat: sent once
]
DISTINCT = 4


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def warm(stack: Any, path: Path, *extra: str) -> int:
    return main(["warm", str(path), "--url", stack.gateway, "--model", "big", *extra])


def source_of(stack: Any, messages: list[dict[str, str]], stream: bool = True) -> str:
    response = http.post(
        f"{stack.gateway}/v1/chat/completions",
        timeout=30,
        json={"model": "big", "messages": messages, "stream": stream},
    )
    response.raise_for_status()
    return response.headers["x-nearline-source"]


def test_warm_fills_the_cache_once_per_question(make_stack, tmp_path, capsys):
    with make_stack(MockBehaviour(ttft_s=0.05, tokens_per_s=400)) as stack:
        path = write(tmp_path / "questions.txt", QUESTIONS)
        assert warm(stack, path, "--concurrency", "2") == 0
        assert stack.stats()["requests"] == DISTINCT
        err = capsys.readouterr().err
        assert "warm 5/5 [########################] warmed 4" in err  # the progress bar
        assert "5 questions: 4 warmed, 0 already warm, 1 skipped" in err
        # users asking the same questions, streaming or not, now get the stored answer
        assert source_of(stack, [{"role": "user", "content": "Why stream tokens?"}]) == "exact"
        system = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is a draft?"},
        ]
        assert source_of(stack, system, stream=False) == "exact"
        assert stack.stats()["requests"] == DISTINCT


def test_a_second_run_sends_nothing_and_a_lost_state_file_finds_the_cache_warm(
    make_stack, tmp_path, capsys
):
    with make_stack(MockBehaviour(ttft_s=0.05, tokens_per_s=400)) as stack:
        path = write(tmp_path / "questions.txt", QUESTIONS)
        assert warm(stack, path) == 0
        state = tmp_path / "questions.txt.warm-state"
        assert len(state.read_text().splitlines()) == DISTINCT
        capsys.readouterr()

        assert warm(stack, path) == 0  # resumes from the state file: nothing to do
        assert "0 warmed, 0 already warm, 5 skipped" in capsys.readouterr().err
        assert stack.stats()["requests"] == DISTINCT

        state.unlink()  # without the state, the gateway says the answers are cached
        assert warm(stack, path) == 0
        assert "0 warmed, 4 already warm, 1 skipped" in capsys.readouterr().err
        assert stack.stats()["requests"] == DISTINCT
        outcomes = [orjson.loads(line)["outcome"] for line in state.read_text().splitlines()]
        assert outcomes == ["already-warm"] * DISTINCT


def test_bad_lines_are_reported_by_number_and_the_rest_still_run(make_stack, tmp_path, capsys):
    lines = [
        "What is nearline?",
        '{"question": 3}',
        "",
        "{not json",
        '{"question": "a", "messages": []}',
        '{"question": "What is a preliminary answer?", "model": "no-such-model"}',
        "How do I warm a cache?",
    ]
    with make_stack(MockBehaviour(ttft_s=0.05, tokens_per_s=400)) as stack:
        path = write(tmp_path / "questions.txt", lines)
        assert warm(stack, path, "--quiet") == 1
        err = capsys.readouterr().err
        assert f"{path}:2: " in err
        assert f"{path}:4: not valid JSON" in err
        assert f"{path}:5: give exactly one of" in err
        assert "line 6: HTTP 404 model_not_found" in err
        assert "3 questions: 2 warmed, 0 already warm, 0 skipped (done before), 1 failed" in err
        assert "3 bad lines" in err
        assert stack.stats()["requests"] == 2
        state = tmp_path / "questions.txt.warm-state"
        assert [orjson.loads(x)["line"] for x in state.read_text().splitlines()] == [1, 7]


def test_an_unreachable_gateway_is_one_clear_error(tmp_path, capsys):
    path = write(tmp_path / "questions.txt", ["hello"])
    code = main(["warm", str(path), "--url", "http://127.0.0.1:9", "--model", "big"])
    assert code == 2
    assert "cannot reach the gateway at http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "questions.txt.warm-state").exists()


def test_a_subcommand_error_is_one_stderr_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    assert main(["warm", str(missing), "--model", "big"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"nearline: cannot read {missing}: No such file or directory\n"


def test_an_interrupted_run_resumes_without_asking_twice(make_stack, tmp_path):
    questions = [f"Question number {n}?" for n in range(8)]
    held = MockBehaviour(ttft_s=0.01, tokens_per_s=400, hold_until_released=True)
    with make_stack(held) as stack:
        path = write(tmp_path / "questions.txt", questions)
        state = tmp_path / "questions.txt.warm-state"

        def run_warm() -> subprocess.Popen[str]:
            command = [sys.executable, "-m", "nearline", "warm", str(path)]
            command += ["--url", stack.gateway, "--model", "big", "--concurrency", "1"]
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEARLINE_")}
            return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)

        def release() -> None:
            http.post(f"{stack.mock}/mock/release", timeout=5).raise_for_status()

        process = run_warm()
        for asked in range(1, 4):  # the upstream answers three questions, one at a time
            assert stack.wait_for_stats("requests", asked, timeout_s=60)["requests"] == asked
            release()
            eventually(
                lambda n=asked: state.exists() and len(state.read_text().splitlines()) >= n, 30
            )
        assert stack.wait_for_stats("requests", 4)["requests"] == 4  # the fourth is held
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert "interrupted after 3 of 8" in err
        assert len(state.read_text().splitlines()) == 3

        process = run_warm()
        while process.poll() is None:  # answer whatever the resumed run has asked so far
            release()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        stats = stack.wait_for_stats("active", 0)
        keys = [orjson.loads(line)["key"] for line in state.read_text().splitlines()]
        assert len(keys) == len(set(keys)) == len(questions)
        # each question reached the paid model once; the one held at the interruption was
        # either joined by the resumed run's ask or cut off (and not stored) and asked again
        assert len(questions) <= stats["requests"] <= len(questions) + 1
        for question in questions:
            assert source_of(stack, [{"role": "user", "content": question}]) == "exact"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"model": "big"}', 'give exactly one of "question" and "messages"'),
        ('{"question": " "}', '"question" must be a non-empty string'),
        ('{"messages": [{"content": "x"}]}', 'a "role"'),
        ('{"question": "x", "stream": true}', "unknown field(s): stream"),
        ('{"question": "x", "model": 7}', '"model" must be a non-empty string'),
    ],
)
def test_line_errors_say_what_is_wrong(line, reason):
    with pytest.raises(LineError) as error:
        parse_line(line, 1, "big")
    assert reason in str(error.value)


def test_plain_lines_are_questions_even_when_they_look_odd():
    questions, bad = read_questions(["[1]", "  # what?  "], "big")
    assert not bad
    assert [q.body["messages"][0]["content"] for q in questions] == ["[1]", "# what?"]


def test_sampling_fields_travel_with_the_question():
    question = parse_line('{"question": "q", "temperature": 0, "seed": 7}', 3, "big")
    assert question.body == {
        "model": "big",
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0,
        "seed": 7,
        "stream": False,
    }


def test_lines_without_a_model_need_one():
    questions, bad = read_questions(["plain question", '{"question": "q", "model": "m"}'], None)
    assert [q.body["model"] for q in questions] == ["m"]
    assert [(b.line, b.reason) for b in bad] == [
        (1, 'no model: pass --model or give the line a "model"')
    ]
