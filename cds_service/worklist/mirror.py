"""The export as the last screen saw it, kept beside it, so a re-screen reads nothing twice.

A full `screen --fhir-server` keeps every resource it screened in `OUT_DIR/mirror.sqlite3` (type, id,
patient, the NDJSON line). `--since last` downloads only what changed (`$export` with `_since`), writes
it over the mirror by type and id, and evaluates the touched patients, and those whose bar lifted, from
the mirror: no FHIR search per patient. The mirror is a copy of exported records, so it lives where the
export does and is protected like it.

An `_since` export lists changed and new resources in its output, and deleted ones in the manifest's
`deleted` files (transaction Bundles of `DELETE Type/id` entries, kept in `deleted/` by export.py). The
deletions are applied first: each removes its resource from the mirror and touches its patient (a deleted
Patient leaves the mirror with its record), so a diagnosis removed on the server no longer counts. A
server that does not report deletions leaves them in the mirror until the next full screen rebuilds it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from cds_service.fhir.facts import MEDICATION_SOURCES
from cds_service.screening.bulk import (
    DELETED,
    READ_TYPES,
    ReadLimits,
    ReadStats,
    _open,
    export_files,
    lines,
    patient_of,
)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS res (rtype TEXT NOT NULL, id TEXT NOT NULL, patient TEXT, body BLOB NOT NULL,"
    " PRIMARY KEY (rtype, id))",
    "CREATE INDEX IF NOT EXISTS res_patient ON res (patient)",
)


class Mirror:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for ddl in SCHEMA:
                conn.execute(ddl)
            yield conn
            conn.commit()
        finally:
            conn.close()

    def reset(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def take(self, folder: Path, limits: ReadLimits | None = None) -> set[str]:
        """Write the export's resources over the mirror (by type and id); the patients they belong to."""
        touched: set[str] = set()
        medications: set[str] = set()
        max_line = (limits or ReadLimits.from_settings()).max_line_bytes
        stats = ReadStats()
        with self._conn() as conn:
            for rtype, path in export_files(folder):
                if rtype not in READ_TYPES:
                    continue
                batch: list[tuple] = []
                with _open(path) as f:
                    for line in lines(f, max_line, stats):
                        row = _row(line)
                        if row is not None:
                            batch.append(row)
                            if row[2] is not None:
                                touched.add(row[2])
                            elif row[0] == "Medication":
                                medications.add(row[1])
                        if len(batch) >= 5000:
                            conn.executemany("INSERT OR REPLACE INTO res VALUES (?, ?, ?, ?)", batch)
                            batch = []
                conn.executemany("INSERT OR REPLACE INTO res VALUES (?, ?, ?, ?)", batch)
            touched |= _naming(conn, medications)
        return touched

    def forget(self, folder: Path, server: str | None = None, limits: ReadLimits | None = None) -> set[str]:
        """Remove the resources the export's `deleted` files name (`folder`/deleted); the patients they
        belonged to, and those whose medication resources name a deleted Medication. A deleted Patient
        takes their whole record with them. A line that is not such a Bundle, or an entry that is not a
        DELETE of a resource type the screen reads (on `server`, for a full URL), is passed over."""
        touched: set[str] = set()
        medications: set[str] = set()
        with self._conn() as conn:
            for rtype, rid in deleted_in(folder, server, limits):
                found = conn.execute("SELECT patient FROM res WHERE rtype = ? AND id = ?", (rtype, rid))
                touched.update(pid for (pid,) in found.fetchall() if pid is not None)
                conn.execute("DELETE FROM res WHERE rtype = ? AND id = ?", (rtype, rid))
                if rtype == "Patient":
                    touched.add(rid)
                    conn.execute("DELETE FROM res WHERE patient = ?", (rid,))
                elif rtype == "Medication":
                    medications.add(rid)
            touched |= _naming(conn, medications)
        return touched

    def patients(self) -> set[str]:
        with self._conn() as conn:
            return {p for (p,) in conn.execute("SELECT DISTINCT patient FROM res WHERE rtype = 'Patient'")}

    def records(self, patients: set[str], medications: bool = True) -> Iterator[tuple[str, list[dict]]]:
        """(patient, their resources and every Medication), for each of `patients` the mirror holds; without
        the Medications when not `medications` (read once with `medications()`, not once a patient)."""
        shared = self.medications() if medications else []
        with self._conn() as conn:
            for pid in sorted(patients):
                mine = [orjson.loads(b) for (b,) in conn.execute("SELECT body FROM res WHERE patient = ?", (pid,))]
                if any(r.get("resourceType") == "Patient" for r in mine):
                    yield pid, mine + shared

    def medications(self) -> list[dict]:
        """Every Medication resource the mirror holds (they belong to no patient)."""
        with self._conn() as conn:
            return [orjson.loads(b) for (b,) in conn.execute("SELECT body FROM res WHERE rtype = 'Medication'")]


def _naming(conn: sqlite3.Connection, medications: set[str]) -> set[str]:
    """The patients whose medication resources reference one of these Medications (changed or deleted on
    their own, they change what those orders say). One pass over the medication resources."""
    if not medications:
        return set()
    ref = re.compile(rb"Medication(?:/|\\/)(?:" + b"|".join(re.escape(m.encode()) for m in medications) + rb')"')
    marks = ",".join("?" * len(MEDICATION_SOURCES))
    found = conn.execute(f"SELECT patient, body FROM res WHERE rtype IN ({marks})", MEDICATION_SOURCES)
    return {pid for pid, body in found if pid is not None and ref.search(body)}


def deleted_in(folder: Path, server: str | None = None, limits: ReadLimits | None = None) -> Iterator[tuple[str, str]]:
    """(type, id) of every resource the export's `deleted` files (`folder`/deleted) name."""
    gone = folder / DELETED
    if not gone.is_dir():
        return
    max_line = (limits or ReadLimits.from_settings()).max_line_bytes
    for _, path in export_files(gone):
        with _open(path) as f:
            for line in lines(f, max_line, ReadStats()):
                yield from deletions(line, server)


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id


def deletions(line: bytes, server: str | None = None) -> list[tuple[str, str]]:
    """(type, id) of each `DELETE` entry of one Bundle line of a `deleted` file, for the types the screen
    reads. The url is `Type/id`, or a full URL under `server`'s base ending so (another server's resource
    is not ours to delete); a version after `_history` is dropped. The text is only matched, never
    followed."""
    try:
        bundle = orjson.loads(line)
    except orjson.JSONDecodeError:
        return []
    entries = bundle.get("entry") if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" else None
    out = []
    for e in entries if isinstance(entries, list) else []:
        request = e.get("request") if isinstance(e, dict) else None
        if (
            not isinstance(request, dict)
            or request.get("method") != "DELETE"
            or not isinstance(request.get("url"), str)
        ):
            continue
        url = request["url"].split("?")[0].split("#")[0]
        if "://" in url and not (server and url.startswith(server.rstrip("/") + "/")):
            continue
        parts = [p for p in url.removeprefix(server.rstrip("/") + "/" if server else "").split("/") if p]
        if "%" in url or "\\" in url or any(p in (".", "..") for p in parts):
            continue  # dot segments or escapes could name another base on the same host: not ours to delete
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2] in READ_TYPES and _ID.fullmatch(parts[-1]):
            out.append((parts[-2], parts[-1]))
    return out


def _row(line: bytes) -> tuple[str, str, str | None, bytes] | None:
    """(type, id, patient, line) of a usable line; None for what the screen sets aside."""
    try:
        res = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(res, dict) or res.get("resourceType") not in READ_TYPES or not isinstance(res.get("id"), str):
        return None
    pid = None if res["resourceType"] == "Medication" else patient_of(res)
    if pid is None and res["resourceType"] != "Medication":
        return None  # names no patient, or two: set aside, as the screen does
    return res["resourceType"], res["id"], pid, line.rstrip(b"\n")
