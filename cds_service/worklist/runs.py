"""Screens that remember: every `screen` run's rows, kept in the project's store (SQLite or PostgreSQL).

A full run stores a row per patient and trial. An incremental run (`--since last`) stores rows only
for the patients it re-evaluated; the state after a run is, per patient and trial, the newest row
since the last full run. So a weekly re-screen of ten changed patients writes ten patients' rows, and
the worklist compares the states after the last two runs.

Patient ids are stored as given, or as an HMAC-SHA256 under `TRIAL_MATCHER_PATIENT_ID_SALT` when the
site sets `TRIAL_MATCHER_WORKLIST_PATIENT_IDS=pseudonymised` (then the worklist names patients by
that pseudonym, which the site can recompute from its own ids, and cannot re-read them from a server).
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cds_service.dismissals import SCHEMA as DISMISSAL_SCHEMA

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS screen_run (id {serial} PRIMARY KEY, created_at TEXT NOT NULL,"
    " as_of TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, transaction_time TEXT,"
    " patients INTEGER NOT NULL, pseudonymised INTEGER NOT NULL, mirror TEXT)",
    "CREATE TABLE IF NOT EXISTS screen_row (id {serial} PRIMARY KEY, run_id INTEGER NOT NULL,"
    " patient TEXT NOT NULL, trial TEXT NOT NULL, status TEXT NOT NULL, eligible_from TEXT,"
    " failed TEXT, unknowns TEXT, outcomes TEXT)",
    "CREATE UNIQUE INDEX IF NOT EXISTS screen_row_pair ON screen_row (patient, trial, run_id)",
    "CREATE INDEX IF NOT EXISTS screen_row_run ON screen_row (run_id)",
    *DISMISSAL_SCHEMA,  # read by the screening log (the service writes it when a card is dismissed)
)
ROW_COLUMNS = ("patient", "trial", "status", "eligible_from", "failed", "unknowns", "outcomes")
ELIGIBLE = ("likely-eligible", "possibly-eligible")
# an incremental run's row for a patient no longer on the server (their Patient deleted, or not found): it
# stands over their earlier rows, so they leave the state's eligible lists; nobody is screened with it
REMOVED = "not-on-record"


@dataclass(frozen=True)
class Run:
    id: int
    created_at: str
    as_of: date
    source: str
    kind: str  # "full" | "incremental"
    transaction_time: str | None
    patients: int
    pseudonymised: bool
    mirror: str | None = None  # the export as this run saw it (mirror.py), for the next `--since last`


@dataclass(frozen=True)
class StoredRow:
    id: int
    run_id: int
    patient: str
    trial: str
    status: str
    eligible_from: date | None
    failed: str
    unknowns: str
    outcomes: str

    def eligible_on(self, day: date) -> bool:
        """Likely or possibly eligible on `day`: no bar, or the bar lifted by then."""
        return self.status in ELIGIBLE and (self.eligible_from is None or self.eligible_from <= day)


def pseudonym(patient_id: str, salt: str) -> str:
    return hmac.new(salt.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:32]


class RunStore:
    """Synchronous access (the CLI and the admin page's worker thread): one connection per use."""

    def __init__(self, database_url: str) -> None:
        if database_url.startswith("sqlite:///"):
            self._path: Path | None = Path(database_url[len("sqlite:///") :])
            self._dsn = None
            self.p = "?"
        elif database_url.startswith(("postgresql://", "postgres://")):
            self._path, self._dsn, self.p = None, database_url, "%s"
        else:
            raise ValueError("database URL must start with sqlite:/// or postgresql://")

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn: Any = sqlite3.connect(self._path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            serial = "INTEGER"
        else:
            import psycopg  # optional dependency (the `postgres` extra)

            conn = psycopg.connect(self._dsn)
            serial = "BIGSERIAL"
        try:
            for ddl in SCHEMA:
                conn.execute(ddl.format(serial=serial))
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def save(self, run: dict[str, Any], rows: Iterable[dict[str, Any]]) -> int:
        """Store one run and its rows in one transaction; the run's id. Without `run["patients"]`, the patients
        are counted as the rows go in (each patient's rows together, as a screen gives them), so a screen's
        millions of rows are read once. The rows go to the database as they are (named parameters), an empty
        cell as NULL: no tuple is built in Python for each."""
        p = self.p
        cols = ("created_at", "as_of", "source", "kind", "transaction_time", "patients", "pseudonymised", "mirror")
        values = [datetime.now(UTC).isoformat(timespec="seconds"), *(run.get(c) for c in cols[1:])]
        values[cols.index("patients")] = run.get("patients") or 0  # counted below when not given
        named = (lambda c: f":{c}") if p == "?" else (lambda c: f"%({c})s")
        counted = _PatientCount(rows)
        with self._conn() as conn:
            cur = conn.cursor()
            sql = f"INSERT INTO screen_run ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))}) RETURNING id"
            cur.execute(sql, values)
            run_id = int(cur.fetchone()[0])
            cells = ", ".join(f"NULLIF({named(c)}, '')" for c in ROW_COLUMNS)
            cur.executemany(
                f"INSERT INTO screen_row (run_id, {', '.join(ROW_COLUMNS)}) VALUES ({run_id}, {cells})", counted
            )
            if run.get("patients") is None:
                cur.execute(f"UPDATE screen_run SET patients = {p} WHERE id = {p}", (counted.patients, run_id))
        return run_id

    def runs(self, source: str | None = None) -> list[Run]:
        """Every run, oldest first (only those of `source` when given)."""
        sql = (
            "SELECT id, created_at, as_of, source, kind, transaction_time, patients, pseudonymised, mirror "
            "FROM screen_run"
        )
        args: tuple = ()
        if source is not None:
            sql, args = sql + f" WHERE source = {self.p}", (source,)
        with self._conn() as conn:
            found = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [Run(r[0], r[1], date.fromisoformat(r[2]), r[3], r[4], r[5], r[6], bool(r[7]), r[8]) for r in found]

    def state(self, run: Run, runs: list[Run]) -> dict[tuple[str, str], StoredRow]:
        """(patient, trial) -> the newest row since the last full run of the same source up to `run` (runs of
        other sources, a one-off screen of another export, are not part of this one's state)."""
        mine = [r for r in runs if r.source == run.source]
        full = max((r.id for r in mine if r.kind == "full" and r.id <= run.id), default=run.id)
        p = self.p
        sql = (
            "SELECT r.id, r.run_id, r.patient, r.trial, r.status, r.eligible_from, r.failed, r.unknowns, r.outcomes "
            "FROM screen_row r JOIN (SELECT patient, trial, MAX(run_id) AS m FROM screen_row "
            f"WHERE run_id >= {p} AND run_id <= {p} AND run_id IN (SELECT id FROM screen_run WHERE source = {p}) "
            "GROUP BY patient, trial) x "
            "ON r.patient = x.patient AND r.trial = x.trial AND r.run_id = x.m"
        )
        with self._conn() as conn:
            found = conn.execute(sql, (full, run.id, run.source)).fetchall()
        return {(r[2], r[3]): _stored(r) for r in found}

    def dismissals(self, trial: str, start: date, end: date) -> list[tuple[str, str | None]]:
        """(date, override reason) of the cards of `trial` dismissed between `start` and `end`."""
        p = self.p
        sql = (
            f"SELECT dismissed_at, reason FROM dismissal WHERE trial = {p} AND dismissed_at >= {p} "
            f"AND dismissed_at <= {p}"
        )
        with self._conn() as conn:
            found = conn.execute(sql, (trial, start.isoformat(), end.isoformat())).fetchall()
        return [(str(at), reason) for at, reason in found]

    def row(self, row_id: int) -> tuple[Run, StoredRow] | None:
        cols = "id, run_id, patient, trial, status, eligible_from, failed, unknowns, outcomes"
        with self._conn() as conn:
            found = conn.execute(f"SELECT {cols} FROM screen_row WHERE id = {self.p}", (row_id,)).fetchone()
        if found is None:
            return None
        stored = _stored(found)
        run = next((r for r in self.runs() if r.id == stored.run_id), None)
        return (run, stored) if run is not None else None


def _stored(r: tuple) -> StoredRow:
    return StoredRow(
        int(r[0]), int(r[1]), r[2], r[3], r[4], date.fromisoformat(r[5]) if r[5] else None, r[6] or "", r[7] or "",
        r[8] or "",
    )  # fmt: skip


class _PatientCount:
    """The rows, passed through once, counting patients as each one's rows begin."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows, self.patients = rows, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        last = None
        for row in self._rows:
            if row["patient"] != last:
                last = row["patient"]
                self.patients += 1
            yield row
