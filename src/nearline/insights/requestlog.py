"""The gateway's request log read back: one reader for ``nearline report`` and ``nearline advise``.

The rows are the ``RequestRecord``s that ``nearline.gateway.telemetry.requestlog`` writes to
``nearline_requests``. SQLite is opened read-only; PostgreSQL (the ``postgres`` extra) with an
ordinary connection. Reading happens in the CLIs, never in the gateway.

What answered a request is a ``nearline.core.source.Source``; ``served_from_store`` is the one
test of whether an answer came from a stored one rather than being computed for the request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nearline.core.errors import CommandError
from nearline.core.extras import missing_extra
from nearline.core.source import CACHED
from nearline.gateway.telemetry.requestlog import COLUMNS, TABLE, RequestRecord

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


def _select(where: LogFilter, placeholder: str) -> tuple[str, list[object]]:
    conditions: list[str] = []
    values: list[object] = []
    if where.since_ts is not None:
        conditions.append(f"ts >= {placeholder}")
        values.append(where.since_ts)
    if where.tenant is not None:
        conditions.append(f"tenant = {placeholder}")
        values.append(where.tenant)
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{clause} ORDER BY ts", values


def _read_sqlite(path: Path, where: LogFilter) -> list[RequestRecord]:
    if not path.is_file():
        raise RequestLogError(f"{path}: no such request log (is request_log.sqlite_path right?)")
    statement, values = _select(where, "?")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _records(db.execute(statement, values).fetchall())
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RequestLogError(f"{path}: {exc}") from exc


def _read_postgres(dsn: str, where: LogFilter) -> list[RequestRecord]:
    try:
        import psycopg
    except ModuleNotFoundError as exc:
        raise missing_extra("postgres", "reading the PostgreSQL request log", exc) from exc
    statement, values = _select(where, "%s")
    try:
        with psycopg.connect(dsn) as db:
            return _records(db.execute(statement, values).fetchall())
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())  # libpq's messages span lines: one line here
        raise RequestLogError(f"{_without_password(dsn)}: {reason}".strip()) from exc


def _records(rows: Sequence[Sequence[object]]) -> list[RequestRecord]:
    return [_record(dict(zip(COLUMNS, row, strict=True))) for row in rows]


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
