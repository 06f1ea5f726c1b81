"""Durable storage of CDS Hooks feedback: SQLite by default, PostgreSQL by DSN.

A feedback POST is answered only after its rows are committed, so a crash or a
shutdown after the answer loses nothing. Rows hold what the EHR sent about a
card (outcome, accepted suggestions, override reason), never patient data from
the hook call.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .hooks import FeedbackItem

_COLUMNS = (
    "id",
    "received_at",
    "service_id",
    "card",
    "outcome",
    "outcome_timestamp",
    "accepted_suggestions",
    "override_reason",
)


class FeedbackStore(Protocol):
    async def add(self, service_id: str, items: list[FeedbackItem]) -> int: ...
    async def recent(self, limit: int = 100, service_id: str | None = None) -> list[dict[str, Any]]: ...
    async def count(self) -> int: ...
    async def close(self) -> None: ...


def _row(service_id: str, item: FeedbackItem, now: str) -> tuple:
    accepted = [s.id for s in item.acceptedSuggestions or []]
    override = item.overrideReason.model_dump(mode="json", exclude_none=True) if item.overrideReason else None
    return (
        now,
        service_id,
        item.card,
        item.outcome,
        item.outcomeTimestamp,
        json.dumps(accepted) if accepted else None,
        json.dumps(override) if override else None,
    )


def _decode(row: tuple) -> dict[str, Any]:
    d = dict(zip(_COLUMNS, row, strict=True))
    for k in ("accepted_suggestions", "override_reason"):
        if d[k]:
            d[k] = json.loads(d[k])
    return {k: v for k, v in d.items() if v is not None}


class SqliteFeedbackStore:
    """One connection, used from a worker thread under a lock; WAL, synchronous=FULL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,"
            " service_id TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,"
            " accepted_suggestions TEXT, override_reason TEXT)"
        )
        self._lock = asyncio.Lock()

    def _insert(self, rows: list[tuple]) -> int:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany(
                "INSERT INTO feedback (received_at, service_id, card, outcome, outcome_timestamp,"
                " accepted_suggestions, override_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return len(rows)

    async def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, i, now) for i in items]
        async with self._lock:
            return await asyncio.to_thread(self._insert, rows)

    async def recent(self, limit: int = 100, service_id: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM feedback"
        args: tuple = ()
        if service_id:
            sql += " WHERE service_id = ?"
            args = (service_id,)
        sql += " ORDER BY id DESC LIMIT ?"
        async with self._lock:
            rows = await asyncio.to_thread(lambda: self._conn.execute(sql, (*args, limit)).fetchall())
        return [_decode(r) for r in rows]

    async def count(self) -> int:
        async with self._lock:
            return await asyncio.to_thread(lambda: self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._conn.close)


class PostgresFeedbackStore:
    """PostgreSQL through psycopg 3 (install the `postgres` extra)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg  # optional dependency

            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=False)
            async with self._conn.cursor() as cur:
                await cur.execute(
                    "CREATE TABLE IF NOT EXISTS feedback (id BIGSERIAL PRIMARY KEY, received_at TEXT NOT NULL,"
                    " service_id TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL,"
                    " outcome_timestamp TEXT NOT NULL, accepted_suggestions TEXT, override_reason TEXT)"
                )
            await self._conn.commit()
        return self._conn

    async def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, i, now) for i in items]
        async with self._lock:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO feedback (received_at, service_id, card, outcome, outcome_timestamp,"
                    " accepted_suggestions, override_reason) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            await conn.commit()
        return len(rows)

    async def recent(self, limit: int = 100, service_id: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM feedback"
        args: list[Any] = []
        if service_id:
            sql += " WHERE service_id = %s"
            args.append(service_id)
        sql += " ORDER BY id DESC LIMIT %s"
        async with self._lock:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.execute(sql, (*args, limit))
                rows = await cur.fetchall()
            await conn.commit()
        return [_decode(tuple(r)) for r in rows]

    async def count(self) -> int:
        async with self._lock:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.execute("SELECT COUNT(*) FROM feedback")
                (n,) = await cur.fetchone()
            await conn.commit()
        return int(n)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def open_store(database_url: str) -> FeedbackStore:
    """`sqlite:///relative/or/absolute/path.sqlite3` or `postgresql://user:pass@host/db`."""
    if database_url.startswith("sqlite:///"):
        return SqliteFeedbackStore(database_url[len("sqlite:///") :])
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresFeedbackStore(database_url)
    raise ValueError("database URL must start with sqlite:/// or postgresql://")
