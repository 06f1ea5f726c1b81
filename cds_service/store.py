"""Durable storage: CDS Hooks feedback and checklist snapshots. SQLite by default, PostgreSQL by DSN.

Feedback: a POST is answered only after its rows are committed, so a crash or a
shutdown after the answer loses nothing. Rows hold what the EHR sent about a card
(outcome, accepted suggestions, override reason), never patient data from the hook.

Checklists: the eligibility detail behind a card's link, kept until the link
expires. Only a SHA-256 of the link token is stored, so the database alone
cannot open a checklist; expired snapshots are wiped and their hash kept a day
to answer "expired" rather than "unknown".
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cds_service import dismissals as dm
from cds_service.api.models import FeedbackItem
from cds_service.eligibility.report import Dismissal
from cds_service.settings import POSTGRES_URLS, SQLITE_URL, sqlite_path

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
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (received_at, service_id, card, outcome, outcome_timestamp, "
    "accepted_suggestions, override_reason) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS feedback (id {serial} PRIMARY KEY, received_at TEXT NOT NULL,"
    " service_id TEXT NOT NULL, card TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL,"
    " accepted_suggestions TEXT, override_reason TEXT)",
    "CREATE TABLE IF NOT EXISTS checklist (token_hash TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL,"
    " payload TEXT)",
    # the purge looks rows up by expiry: without this index every purge read the whole table, payloads included
    "CREATE INDEX IF NOT EXISTS checklist_expires ON checklist (expires_at)",
    # client JWT ids: one acceptance across every worker and instance sharing this database
    "CREATE TABLE IF NOT EXISTS jwt_replay (iss TEXT NOT NULL, jti TEXT NOT NULL, exp DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (iss, jti))",
    "CREATE INDEX IF NOT EXISTS jwt_replay_exp ON jwt_replay (exp)",
    *dm.SCHEMA,  # cards issued and dismissed (cds_service/dismissals.py)
)
EXPIRED_GRACE_SECONDS = 86_400
PURGE_EVERY_SECONDS = 60.0


def _jti_statements(p: str, iss: str, jti: str, exp: float, purge: bool) -> list[tuple[str, tuple]]:
    """Forget an expired use of this jti (and, now and then, every expired one), then claim it."""
    now = time.time()
    statements = [(f"DELETE FROM jwt_replay WHERE iss = {p} AND jti = {p} AND exp < {p}", (iss, jti, now))]
    if purge:
        statements.append((f"DELETE FROM jwt_replay WHERE exp < {p}", (now,)))
    statements.append(
        (f"INSERT INTO jwt_replay (iss, jti, exp) VALUES ({p}, {p}, {p}) ON CONFLICT DO NOTHING", (iss, jti, exp))
    )
    return statements


def _checklist_statements(p: str, rows: list[tuple[str, float, str]], purge: bool) -> list[tuple[str, list[tuple]]]:
    now = time.time()
    statements: list[tuple[str, list[tuple]]] = []
    if purge:
        statements += [
            (f"UPDATE checklist SET payload = NULL WHERE expires_at < {p} AND payload IS NOT NULL", [(now,)]),
            (f"DELETE FROM checklist WHERE expires_at < {p}", [(now - EXPIRED_GRACE_SECONDS,)]),
        ]
    statements.append((f"INSERT INTO checklist (token_hash, expires_at, payload) VALUES ({p}, {p}, {p})", rows))
    return statements


class _PurgeClock:
    """Expired checklists are purged with a write at most once a minute, not with every write."""

    def __init__(self) -> None:
        self._last = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= PURGE_EVERY_SECONDS:
            self._last = now
            return True
        return False


class Store(Protocol):
    async def add(self, service_id: str, items: list[FeedbackItem], dismiss_seconds: float = 0) -> int: ...
    async def recent(
        self, limit: int = 100, service_id: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]: ...
    async def count(self) -> int: ...
    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool: ...
    async def put_checklists(self, rows: list[tuple[str, float, str]]) -> None: ...
    async def get_checklist(self, token_hash: str) -> tuple[float, str | None] | None: ...
    async def subject_key(self) -> str: ...
    async def remember_cards(self, rows: list[tuple[str, str, str, float]]) -> None: ...
    async def dismissals(self, subject: str) -> dict[str, Dismissal]: ...
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


def _recent_query(p: str, limit: int, service_id: str | None, before: int | None) -> tuple[str, tuple]:
    """Newest first; `before` (an id) pages back from there."""
    where, args = [], []
    if service_id:
        where.append(f"service_id = {p}")
        args.append(service_id)
    if before is not None:
        where.append(f"id < {p}")
        args.append(before)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM feedback"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY id DESC LIMIT {p}", (*args, limit)


class SqliteStore:
    """One connection, used from a worker thread under a lock; WAL, synchronous=FULL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        for ddl in _SCHEMA:
            self._conn.execute(ddl.format(serial="INTEGER"))
        self._lock = asyncio.Lock()
        self._purge = _PurgeClock()
        self._jti_purge = _PurgeClock()
        self._key: str | None = None

    def _tx(self, statements: list[tuple[str, list[tuple]]]) -> None:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                cur.executemany(sql, rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _tx_unsynced(self, statements: list[tuple[str, list[tuple]]]) -> None:
        """`_tx` without an fsync at its commit, for what every hook writes and the next chart opening makes
        again (checklists, the cards shown). An fsync per commit was 0.2 ms at the median and 0.4 ms at the
        99th percentile on this machine's quiet disk (7 ms with a test suite running beside it; a network
        volume's are slower); without it a commit is 0.02 ms, and the one that starts a checkpoint (every
        1,000 WAL pages, SQLite's default) pays the flush, up to 16 ms here. WAL + synchronous=NORMAL keeps
        the database consistent and every commit survives the service crashing; only an OS crash or power
        cut may lose the newest of them (a link that then finds no checklist; an override of such a card
        stored without its dismissal). What a clinician sends (feedback, dismissals) stays synchronous=FULL."""
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            self._tx(statements)
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

    async def _run(self, fn: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn)

    async def add(self, service_id: str, items: list[FeedbackItem], dismiss_seconds: float = 0) -> int:
        """Feedback rows and, in the same transaction, the dismissals overridden cards ask for."""
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, i, now) for i in items]
        dismiss = dm.dismiss_statements("?", items, dismiss_seconds) if dismiss_seconds > 0 else []
        await self._run(lambda: self._tx([(_INSERT_FEEDBACK.format(p="?"), rows), *dismiss]))
        return len(rows)

    async def subject_key(self) -> str:
        if self._key is None:
            (insert, first), (select, _) = dm.key_statements("?")
            self._key = await self._run(
                lambda: (self._conn.execute(insert, first), self._conn.execute(select).fetchone()[0])[1]
            )
        return self._key

    async def remember_cards(self, rows: list[tuple[str, str, str, float]]) -> None:
        """The cards a chart was just shown, as the checklists: made again at its next opening, no fsync."""
        statements = dm.remember_statements("?", rows)
        await self._run(lambda: self._tx_unsynced(statements))

    async def dismissals(self, subject: str) -> dict[str, Dismissal]:
        sql, args = dm.active_query("?", subject)
        return dm.decode(await self._run(lambda: self._conn.execute(sql, args).fetchall()))

    async def recent(
        self, limit: int = 100, service_id: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        sql, args = _recent_query("?", limit, service_id, before)
        rows = await self._run(lambda: self._conn.execute(sql, args).fetchall())
        return [_decode(r) for r in rows]

    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool:
        statements = _jti_statements("?", iss, jti, exp, self._jti_purge.due())

        def claim() -> bool:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    cur.execute(sql, args)
                claimed = cur.rowcount == 1  # the INSERT's: 0 when (iss, jti) was already claimed
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return claimed

        return await self._run(claim)

    async def count(self) -> int:
        return await self._run(lambda: self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    async def put_checklists(self, rows: list[tuple[str, float, str]]) -> None:
        """Checklists are short-lived and re-made on the next chart opening: no fsync for them."""
        statements = _checklist_statements("?", rows, self._purge.due())
        await self._run(lambda: self._tx_unsynced(statements))

    async def get_checklist(self, token_hash: str) -> tuple[float, str | None] | None:
        row = await self._run(
            lambda: self._conn.execute(
                "SELECT expires_at, payload FROM checklist WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        )
        return (float(row[0]), row[1]) if row else None

    async def close(self) -> None:
        await self._run(self._conn.close)


class PostgresStore:
    """PostgreSQL through psycopg 3 (install the `postgres` extra)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._purge = _PurgeClock()
        self._jti_purge = _PurgeClock()
        self._key: str | None = None

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg  # optional dependency

            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=False)
            async with self._conn.cursor() as cur:
                for ddl in _SCHEMA:
                    await cur.execute(ddl.format(serial="BIGSERIAL"))
            await self._conn.commit()
        return self._conn

    async def _tx(self, statements: list[tuple[str, list[tuple]]], fetch: bool = False) -> list[tuple]:
        async with self._lock:
            conn = await self._connection()
            out: list[tuple] = []
            try:
                async with conn.cursor() as cur:
                    for sql, rows in statements:
                        if fetch:
                            await cur.execute(sql, rows[0])
                            out = [tuple(r) for r in await cur.fetchall()]
                        else:
                            await cur.executemany(sql, rows)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
            return out

    async def add(self, service_id: str, items: list[FeedbackItem], dismiss_seconds: float = 0) -> int:
        now = datetime.now(UTC).isoformat()
        rows = [_row(service_id, i, now) for i in items]
        dismiss = dm.dismiss_statements("%s", items, dismiss_seconds) if dismiss_seconds > 0 else []
        await self._tx([(_INSERT_FEEDBACK.format(p="%s"), rows), *dismiss])
        return len(rows)

    async def subject_key(self) -> str:
        if self._key is None:
            (insert, first), (select, _) = dm.key_statements("%s")
            await self._tx([(insert, [first])])
            self._key = str((await self._tx([(select, [()])], fetch=True))[0][0])
        return self._key

    async def remember_cards(self, rows: list[tuple[str, str, str, float]]) -> None:
        await self._tx(dm.remember_statements("%s", rows))

    async def dismissals(self, subject: str) -> dict[str, Dismissal]:
        sql, args = dm.active_query("%s", subject)
        return dm.decode(await self._tx([(sql, [args])], fetch=True))

    async def recent(
        self, limit: int = 100, service_id: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        sql, args = _recent_query("%s", limit, service_id, before)
        return [_decode(r) for r in await self._tx([(sql, [args])], fetch=True)]

    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool:
        statements = _jti_statements("%s", iss, jti, exp, self._jti_purge.due())
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.cursor() as cur:
                    for sql, args in statements:
                        await cur.execute(sql, args)
                    claimed = cur.rowcount == 1
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
            return claimed

    async def count(self) -> int:
        return int((await self._tx([("SELECT COUNT(*) FROM feedback", [()])], fetch=True))[0][0])

    async def put_checklists(self, rows: list[tuple[str, float, str]]) -> None:
        await self._tx(_checklist_statements("%s", rows, self._purge.due()))

    async def get_checklist(self, token_hash: str) -> tuple[float, str | None] | None:
        rows = await self._tx(
            [("SELECT expires_at, payload FROM checklist WHERE token_hash = %s", [(token_hash,)])], fetch=True
        )
        return (float(rows[0][0]), rows[0][1]) if rows else None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def open_store(database_url: str) -> Store:
    """`sqlite:///relative/or/absolute/path.sqlite3` or `postgresql://user:pass@host/db`."""
    if database_url.startswith(SQLITE_URL):
        return SqliteStore(sqlite_path(database_url))
    if database_url.startswith(POSTGRES_URLS):
        return PostgresStore(database_url)
    raise ValueError("database URL must start with sqlite:/// or postgresql://")
