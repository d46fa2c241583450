"""``nearline warm FILE``: ask a running gateway a list of questions so its caches hold the
answers before users ask them.

The file holds one question per line, as plain text or as JSON lines
(``{"question": "..."}`` or ``{"messages": [...]}``, each with an optional ``"model"`` and
the sampling fields the application sends, e.g. ``"temperature"``: they are part of the
cache key).
Every question is sent with ``stream: false``, the way the gateway stores complete answers.
Progress is appended to a state file (``FILE.warm-state`` unless ``--state``), one line per
finished question, so an interrupted run resumes where it stopped. The state file is a hint,
not the truth: a question it lists is probed with ``Cache-Control: only-if-cached`` (no
upstream call; 504 when no tier holds it) and sent again when the gateway lost it (a
restart, a purge, an expiry). A question the gateway already answers from its cache
(``x-nearline-source: exact`` or ``semantic``) counts as already warm. A bad line is
reported with its number and the rest still run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from nearline.core.errors import CommandError
from nearline.core.request import ANSWER_CHANGING_FIELDS
from nearline.core.source import CACHED

CACHED_SOURCES = CACHED
# Sampling fields are part of the cache key: a JSON line may set them so the warmed entry
# matches what the application will send (warm-up lines carry no tools).
PASSED_FIELDS = ANSWER_CHANGING_FIELDS - {"tools", "tool_choice", "response_format"}
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT_S = 30.0


class LineError(Exception):
    """An input line that is not a question nearline can send."""


class AskFailed(Exception):
    """The gateway did not answer one question, even after the retries."""


@dataclass(frozen=True, slots=True)
class Question:
    line: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str


def parse_line(text: str, line: int, default_model: str | None) -> Question:
    """One input line as a request body; ``LineError`` says what is wrong with it."""
    stripped = text.strip()
    model = default_model
    if stripped.startswith("{"):
        try:
            record = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise LineError(f"not valid JSON: {exc}") from exc
        messages = _messages_of(record)
        params = {name: record[name] for name in PASSED_FIELDS & set(record)}
        if "model" in record:
            if not isinstance(record["model"], str) or not record["model"]:
                raise LineError('"model" must be a non-empty string')
            model = record["model"]
    else:
        messages = [{"role": "user", "content": stripped}]
        params = {}
    if model is None:
        raise LineError('no model: pass --model or give the line a "model"')
    return Question(line, {"model": model, "messages": messages, **params, "stream": False})


def _messages_of(record: Any) -> list[Any]:
    if not isinstance(record, dict):
        raise LineError('a JSON line must be an object with "question" or "messages"')
    unknown = set(record) - {"question", "messages", "model"} - PASSED_FIELDS
    if unknown:
        raise LineError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if ("question" in record) == ("messages" in record):
        raise LineError('give exactly one of "question" and "messages"')
    if "question" in record:
        question = record["question"]
        if not isinstance(question, str) or not question.strip():
            raise LineError('"question" must be a non-empty string')
        return [{"role": "user", "content": question}]
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise LineError('"messages" must be a non-empty list')
    if not all(isinstance(m, dict) and "role" in m for m in messages):
        raise LineError('every message must be an object with a "role"')
    return messages


def read_questions(
    lines: Iterable[str], default_model: str | None
) -> tuple[list[Question], list[BadLine]]:
    questions: list[Question] = []
    bad: list[BadLine] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            questions.append(parse_line(text, number, default_model))
        except LineError as exc:
            bad.append(BadLine(number, str(exc)))
    return questions, bad


def question_key(url: str, api_key: str | None, body: dict[str, Any]) -> str:
    """Names one question for one gateway and one key (so one tenant's cache), not the rest."""
    identity = {
        "url": url.rstrip("/"),
        "key": hashlib.sha256((api_key or "").encode()).hexdigest(),
        "model": body["model"],
        "messages": body["messages"],
        "params": {name: body[name] for name in PASSED_FIELDS & set(body)},
    }
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


class StateFile:
    """Append-only JSON lines, one per finished question; a torn last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        if path.exists():
            for text in path.read_text(encoding="utf-8").splitlines():
                try:
                    self.done.add(orjson.loads(text)["key"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
        self._file: TextIO | None = None

    def record(self, key: str, line: int, outcome: str) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        entry = {"key": key, "line": line, "outcome": outcome, "at": round(time.time(), 3)}
        self._file.write(orjson.dumps(entry).decode() + "\n")
        self._file.flush()
        self.done.add(key)

    def __enter__(self) -> StateFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class Tally:
    total: int
    warmed: int = 0
    already_warm: int = 0
    skipped: int = 0  # finished in an earlier run and still cached, or a repeat in the file
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.warmed + self.already_warm + self.skipped + self.failed

    def summary(self, bad_lines: int) -> str:
        return (
            f"warm: {self.total} questions: {self.warmed} warmed, {self.already_warm} already "
            f"warm, {self.skipped} skipped (done before), {self.failed} failed; "
            f"{bad_lines} bad lines"
        )


class Progress:
    """A one-line bar on a terminal (redrawn in place); elsewhere, a line every few seconds."""

    def __init__(self, tally: Tally, stream: TextIO, enabled: bool = True) -> None:
        self._tally = tally
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._last = 0.0

    def line(self) -> str:
        tally = self._tally
        done, total = tally.finished, max(tally.total, 1)
        width = 24
        filled = round(width * done / total)
        elapsed = max(time.monotonic() - tally.started, 1e-6)
        fresh = tally.warmed + tally.already_warm + tally.failed
        rate = fresh / elapsed
        eta = f"{(tally.total - done) / rate:.0f}s" if rate > 0 and done < tally.total else "-"
        return (
            f"warm {done}/{tally.total} [{'#' * filled}{'-' * (width - filled)}] "
            f"warmed {tally.warmed} · already {tally.already_warm} · skipped {tally.skipped} · "
            f"failed {tally.failed} · {rate:.1f}/s · eta {eta}"
        )

    def update(self, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if self._tty:
            self._stream.write("\r\x1b[2K" + self.line())
        elif force or now - self._last >= 5.0:
            self._stream.write(self.line() + "\n")
        else:
            return
        self._last = now
        self._stream.flush()

    def say(self, message: str) -> None:
        """A message above the bar (the bar is redrawn after it)."""
        prefix = "\r\x1b[2K" if self._enabled and self._tty else ""
        self._stream.write(prefix + message + "\n")
        self.update(force=self._tty)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """End the bar's line, so what is printed next starts on a line of its own."""
        if self._enabled and self._tty:
            self._stream.write("\n")
        self._stream.flush()


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    api_key: str | None
    timeout_s: float = 300.0
    retries: int = 3

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class GatewayUnreachable(Exception):
    """The gateway cannot be asked at all (down, wrong URL, key refused)."""


async def check_gateway(client: httpx.AsyncClient, target: Target) -> None:
    try:
        response = await client.get(f"{target.url}/v1/models", headers=target.headers)
    except httpx.TransportError as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {target.url}: {exc}") from exc
    if response.status_code == 401:
        raise GatewayUnreachable(f"the gateway refused the API key: {_error_text(response)}")
    if response.status_code != 200:
        raise GatewayUnreachable(
            f"{target.url}/v1/models answered HTTP {response.status_code}: {_error_text(response)}"
        )


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error.get('code') or error.get('type')}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


async def ask(client: httpx.AsyncClient, target: Target, question: Question) -> str:
    """Send one question; return the gateway's ``x-nearline-source``. Raises ``AskFailed``
    with a readable reason when it fails for good."""
    for attempt in range(target.retries + 1):
        try:
            response = await client.post(
                f"{target.url}/v1/chat/completions", json=question.body, headers=target.headers
            )
        except httpx.TransportError as exc:
            if attempt == target.retries:
                raise AskFailed(f"{type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(min(2.0**attempt, MAX_RETRY_WAIT_S))
            continue
        if response.status_code == 200:
            return str(response.headers.get("x-nearline-source", ""))
        if response.status_code not in RETRY_STATUSES or attempt == target.retries:
            raise AskFailed(f"HTTP {response.status_code} {_error_text(response)}")
        await asyncio.sleep(_retry_after(response, attempt))
    raise AssertionError("unreachable")


async def still_cached(client: httpx.AsyncClient, target: Target, question: Question) -> bool:
    """Ask with ``Cache-Control: only-if-cached``: the gateway answers from a cache tier or
    refuses (504 ``not_cached``) without calling any model. Anything but a 200 is "no"."""
    headers = {**target.headers, "Cache-Control": "only-if-cached"}
    try:
        response = await client.post(
            f"{target.url}/v1/chat/completions", json=question.body, headers=headers
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 2.0**attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT_S)


async def warm(
    questions: list[Question],
    target: Target,
    state: StateFile,
    progress: Progress,
    tally: Tally,
    concurrency: int,
) -> None:
    queue: asyncio.Queue[tuple[Question, str]] = asyncio.Queue()
    seen: set[str] = set()
    for question in questions:
        key = question_key(target.url, target.api_key, question.body)
        if key in seen:
            tally.skipped += 1
            continue
        seen.add(key)
        queue.put_nowait((question, key))
    progress.update(force=True)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=target.timeout_s, limits=limits) as client:
        await check_gateway(client, target)

        async def worker() -> None:
            while not queue.empty():
                question, key = queue.get_nowait()
                if key in state.done and await still_cached(client, target, question):
                    tally.skipped += 1  # done before, and the gateway still holds it
                    progress.update()
                    continue
                try:
                    source = await ask(client, target, question)
                except AskFailed as exc:
                    tally.failed += 1
                    progress.say(f"warm: line {question.line}: {exc}")
                    continue
                outcome = "already-warm" if source in CACHED_SOURCES else "warmed"
                if outcome == "warmed":
                    tally.warmed += 1
                else:
                    tally.already_warm += 1
                state.record(key, question.line, outcome)
                progress.update()

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    progress.update(force=True)


def _run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text: {exc}") from exc
    questions, bad = read_questions(text.splitlines(), args.model)
    for line in bad:
        print(f"nearline warm: {path}:{line.line}: {line.reason}", file=sys.stderr)
    tally = Tally(total=len(questions))
    target = Target(args.url.rstrip("/"), args.api_key, args.timeout, args.retries)
    interrupted = False
    with (
        StateFile(args.state or path.with_name(path.name + ".warm-state")) as state,
        Progress(tally, sys.stderr, enabled=not args.quiet) as progress,
    ):
        try:
            asyncio.run(warm(questions, target, state, progress, tally, args.concurrency))
        except GatewayUnreachable as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print(
            f"nearline warm: interrupted after {tally.finished} of {tally.total}; "
            f"run the same command again to resume (state: {state.path})",
            file=sys.stderr,
        )
        return 130
    print(tally.summary(len(bad)), file=sys.stderr)
    return 1 if bad or tally.failed else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "warm",
        help="fill a running gateway's caches with the answers to a file of questions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="questions: plain text or JSON, one per line")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    parser.add_argument("--api-key", default=None, help="warm this key's tenant cache")
    parser.add_argument("--model", default=None, help="model for lines that name none")
    parser.add_argument("--concurrency", type=_positive, default=4, help="requests at once")
    parser.add_argument("--state", type=Path, default=None, help="default: FILE.warm-state")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=3, help="on 429/502/503/504 or resets")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
