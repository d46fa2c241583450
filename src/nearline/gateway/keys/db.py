"""The two databases the key store speaks to: SQLite (embedded default) and PostgreSQL.

Both take the same SQL, written with ``?`` placeholders (PostgreSQL gets ``%s``). SQLite
calls run in a worker thread, one at a time; PostgreSQL calls share one async connection,
one operation (or transaction) at a time. Neither blocks the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nearline.core.extras import missing_extra

if TYPE_CHECKING:
    import psycopg

Row = tuple[Any, ...]
Statement = tuple[str, Sequence[Any]]


class Database(Protocol):
    errors: tuple[type[Exception], ...]

    async def open(self) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def run(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction."""
        ...

    async def aclose(self) -> None: ...


class SqliteDatabase:
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            return db

        self._db = await asyncio.to_thread(connect)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        db = self._db
        assert db is not None

        def query() -> list[Row]:
            with self._lock:
                return list(db.execute(sql, tuple(params)).fetchall())

        return await asyncio.to_thread(query)

    async def run(self, statements: Sequence[Statement]) -> None:
        db = self._db
        assert db is not None

        def write() -> None:
            with self._lock, db:
                for sql, params in statements:
                    db.execute(sql, tuple(params))

        await asyncio.to_thread(write)

    async def aclose(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None


class PostgresDatabase:
    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise missing_extra("postgres", "auth.store.postgres_dsn", exc) from exc
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._dsn = dsn
        self._db: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import psycopg

        self._db = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        assert self._db is not None
        async with self._lock:
            cursor = await self._db.execute(_pg(sql), tuple(params))
            return list(await cursor.fetchall())

    async def run(self, statements: Sequence[Statement]) -> None:
        assert self._db is not None
        async with self._lock, self._db.transaction():
            for sql, params in statements:
                await self._db.execute(_pg(sql), tuple(params))

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")
