"""The gateway's request log read back: one reader for ``nearline report`` and ``nearline advise``.

The rows are the ``RequestRecord``s that ``nearline.gateway.telemetry.requestlog`` writes to
``nearline_requests``. SQLite is opened read-only; PostgreSQL (the ``postgres`` extra) with an
ordinary connection. Reading happens in the CLIs, never in the gateway.

What answered a request is a ``nearline.core.source.Source``; ``served_from_store`` is the one
test of whether an answer came from a stored one rather than being computed for the request.
A column the log does not have yet (a log written before it was added, read without the
gateway migrating it) reads as its default; ``logged_calls`` parses the ``calls`` column (a
plan's calls, one by one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import orjson

from nearline.core.errors import CommandError
from nearline.core.extras import missing_extra
from nearline.core.source import CACHED
from nearline.gateway.telemetry.requestlog import ADDED_COLUMNS, COLUMNS, TABLE, RequestRecord

# The gateway writes only ``Source`` values. Logs from elsewhere, such as a JSONL file written
# by another system for ``nearline advise``, spell a stored answer their own way; these
# spellings are accepted here and nowhere else. ``precomputed`` and ``prefetch`` are answers
# prepared ahead of the request (a batch job, a prefetcher) that no cache tier of ours wrote.
FOREIGN_STORE_SOURCES = frozenset(
    {"exact_cache", "semantic_cache", "cache", "precomputed", "prefetch"}
)


def served_from_store(source: str) -> bool:
    """Answered from a stored answer (a cache tier, or a store named in a foreign log) rather
    than computed for this request."""
    return source in CACHED or source in FOREIGN_STORE_SOURCES


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """One call of an answer made of several (a plan's planner, steps, synthesis, fallback),
    as the ``calls`` column holds it."""

    role: str  # plan, step, synthesis, fallback
    tier: str
    step: int | None
    outcome: str  # ok, cached, error, timeout, cancelled
    latency_ms: float
    cost_usd: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


_CALL_FIELDS = frozenset(f.name for f in fields(LoggedCall))


def logged_calls(row: RequestRecord) -> tuple[LoggedCall, ...]:
    """The row's calls (empty for an answer of one call); entries not understood are left
    out, so a newer log's extra fields do not break an older reader."""
    if not row.calls:
        return ()
    try:
        items = orjson.loads(row.calls)
    except orjson.JSONDecodeError:
        return ()
    calls = []
    for item in items if isinstance(items, list) else ():
        try:
            calls.append(LoggedCall(**{k: v for k, v in item.items() if k in _CALL_FIELDS}))
        except (AttributeError, TypeError):
            continue
    return tuple(calls)


class RequestLogError(CommandError):
    """The request log cannot be read; the message says which one and why."""


@dataclass(frozen=True, slots=True)
class LogFilter:
    since_ts: float | None = None  # unix seconds; rows that arrived earlier are left out
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class LogLocation:
    """Where the request log lives: a PostgreSQL DSN wins over the SQLite path."""

    sqlite_path: Path | None = None
    postgres_dsn: str | None = None

    def describe(self) -> str:
        return _without_password(self.postgres_dsn) if self.postgres_dsn else str(self.sqlite_path)


def read_rows(location: LogLocation, where: LogFilter | None = None) -> list[RequestRecord]:
    """Every row matching ``where``, oldest first."""
    where = where or LogFilter()
    if location.postgres_dsn:
        return _read_postgres(location.postgres_dsn, where)
    if location.sqlite_path is None:
        raise RequestLogError("no request log given: pass --sqlite, --postgres or --config")
    return _read_sqlite(location.sqlite_path, where)


def _select(where: LogFilter, placeholder: str, columns: Sequence[str]) -> tuple[str, list[object]]:
    conditions: list[str] = []
    values: list[object] = []
    if where.since_ts is not None:
        conditions.append(f"ts >= {placeholder}")
        values.append(where.since_ts)
    if where.tenant is not None:
        conditions.append(f"tenant = {placeholder}")
        values.append(where.tenant)
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(columns)} FROM {TABLE}{clause} ORDER BY ts", values


def _present(names: Sequence[object]) -> list[str]:
    """The row's columns this log has (every one but those added later may be missing)."""
    have = {str(name) for name in names}
    return [name for name in COLUMNS if name in have or name not in ADDED_COLUMNS]


def _read_sqlite(path: Path, where: LogFilter) -> list[RequestRecord]:
    if not path.is_file():
        raise RequestLogError(f"{path}: no such request log (is request_log.sqlite_path right?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            info = db.execute(f"PRAGMA table_info({TABLE})").fetchall()
            columns = _present([column[1] for column in info])
            statement, values = _select(where, "?", columns)
            return _records(db.execute(statement, values).fetchall(), columns)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RequestLogError(f"{path}: {exc}") from exc


def _read_postgres(dsn: str, where: LogFilter) -> list[RequestRecord]:
    try:
        import psycopg
    except ModuleNotFoundError as exc:
        raise missing_extra("postgres", "reading the PostgreSQL request log", exc) from exc
    try:
        with psycopg.connect(dsn) as db:
            names = db.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = %s AND table_schema = current_schema()",
                (TABLE,),
            ).fetchall()
            columns = _present([name[0] for name in names])
            statement, values = _select(where, "%s", columns)
            return _records(db.execute(statement, values).fetchall(), columns)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())  # libpq's messages span lines: one line here
        raise RequestLogError(f"{_without_password(dsn)}: {reason}".strip()) from exc


def _records(rows: Sequence[Sequence[object]], columns: Sequence[str]) -> list[RequestRecord]:
    return [_record(dict(zip(columns, row, strict=True))) for row in rows]


def _record(values: dict[str, object]) -> RequestRecord:
    values["stream"] = bool(values["stream"])  # SQLite stores booleans as 0/1
    # The selected columns are the dataclass's fields, by name; the database typed them.
    return RequestRecord(**values)  # type: ignore[arg-type]


def _without_password(dsn: str) -> str:
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ModuleNotFoundError:
        return "the PostgreSQL request log"
    try:
        info = conninfo_to_dict(dsn)
    except ProgrammingError:
        return "the PostgreSQL request log"
    host, db = info.get("host", "localhost"), info.get("dbname", "")
    return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{db}"
