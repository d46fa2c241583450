"""Read the gateway's request log (``nearline_requests``) back as ``RequestRecord`` rows.

The rows are the ones ``nearline.gateway.telemetry.requestlog`` writes; SQLite is opened read-only,
PostgreSQL with an ordinary connection. Reading happens in the CLI, never in the gateway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from nearline.gateway.telemetry.requestlog import COLUMNS, TABLE, RequestRecord


class ReportError(Exception):
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
        raise ReportError("no request log given: pass --sqlite, --postgres or --config")
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
        raise ReportError(f"{path}: no such request log (is request_log.sqlite_path right?)")
    statement, values = _select(where, "?")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _records(db.execute(statement, values).fetchall())
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: {exc}") from exc


def _read_postgres(dsn: str, where: LogFilter) -> list[RequestRecord]:
    statement, values = _select(where, "%s")
    try:
        with psycopg.connect(dsn) as db:
            return _records(db.execute(statement, values).fetchall())
    except psycopg.Error as exc:
        raise ReportError(f"{_without_password(dsn)}: {exc}".strip()) from exc


def _records(rows: Sequence[Sequence[object]]) -> list[RequestRecord]:
    return [_record(dict(zip(COLUMNS, row, strict=True))) for row in rows]


def _record(values: dict[str, object]) -> RequestRecord:
    values["stream"] = bool(values["stream"])  # SQLite stores booleans as 0/1
    # The selected columns are the dataclass's fields, by name; the database typed them.
    return RequestRecord(**values)  # type: ignore[arg-type]


def _without_password(dsn: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL request log"
    host, db = info.get("host", "localhost"), info.get("dbname", "")
    return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{db}"
