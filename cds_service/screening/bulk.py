"""Reading a Bulk Data export (NDJSON, one or more files per resource type, optionally gzipped) and
grouping it by patient without holding it in memory: each line is routed to one of N partition files
by a hash of its patient, so a partition holds whole patients and is small enough to load on its own.

Memory is bounded whatever the export holds: a line longer than `max_line_bytes` is skipped without
being held (read in pieces to its end), and a patient whose record passes `max_patient_bytes` or
`max_patient_resources` is not screened (a cut record would read as "none on record"). Both are
counted in ReadStats and shown in the funnel page and the command's summary."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from cds_service.fhir.gather import QUERIES
from cds_service.fhir.subjects import owner

READ_TYPES = frozenset({t for _, t in QUERIES.values()} | {"Medication"})
_FILE = re.compile(r"^([A-Za-z]+)(?:\.[^.]+)*\.ndjson(?:\.gz)?$")


class ExportFileError(Exception):
    """An export file that cannot be read to its end (a corrupt or truncated gzip, an I/O error): the export
    is not screened, since its records would be cut. The message names the file, never its content."""


@dataclass
class ReadStats:
    lines: int = 0
    resources: int = 0
    malformed: int = 0  # not JSON, or not a resource
    no_patient: int = 0  # a resource that names no patient (set aside, as the hook does)
    other_types: int = 0  # resource types no criterion reads
    two_patients: int = 0  # a resource whose references name two different patients (set aside)
    too_long: int = 0  # lines over the line cap: skipped unread
    patients: set[str] = field(default_factory=set)
    too_large: set[str] = field(default_factory=set)  # patients over the per-patient cap: not screened


MIB = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    """What one line and one patient may cost (settings.screen_*; defaults there and in the README)."""

    max_line_bytes: int = 16 * MIB
    max_patient_bytes: int = 128 * MIB
    max_patient_resources: int = 200_000

    @classmethod
    def from_settings(cls) -> ReadLimits:
        from cds_service.settings import get_settings  # late: the CLI's environment, read when screening

        s = get_settings()
        return cls(s.screen_max_line_bytes, s.screen_max_patient_bytes, s.screen_max_patient_resources)


def export_files(folder: Path) -> list[tuple[str, Path]]:
    """(resource type, file) for every NDJSON file of the export, sorted."""
    out = []
    for path in sorted(folder.iterdir()):
        m = _FILE.match(path.name)
        if m and path.is_file():
            out.append((m.group(1), path))
    return out


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def patient_of(res: dict) -> str | None:
    """The patient a resource belongs to: its own id for a Patient, else the one patient its subject,
    patient or beneficiary names, when every patient it names is that one (subjects.py); else None."""
    return owner(res)[0]


def lines(f: IO[bytes], max_bytes: int, stats: ReadStats, piece: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a file, each of at most `max_bytes` (newline aside). A line is read in pieces: a longer
    one is dropped as soon as it passes the cap and read on to its end unheld, counted in `stats.too_long`."""
    while head := f.readline(piece):
        if head.endswith(b"\n") or len(head) < piece:  # the whole line in one piece
            if len(head) - head.endswith(b"\n") <= max_bytes:
                yield head
            else:
                stats.too_long += 1
            continue
        buf, tail = bytearray(head), head
        while not tail.endswith(b"\n") and len(buf) <= max_bytes:
            tail = f.readline(piece)
            buf += tail
            if not tail:
                break
        if len(buf) - buf.endswith(b"\n") <= max_bytes:
            yield bytes(buf)
            continue
        stats.too_long += 1
        del buf  # freed before the rest of the line is read
        while tail and not tail.endswith(b"\n"):
            tail = f.readline(piece)


def partition(folder: Path, work: Path, parts: int, limits: ReadLimits | None = None) -> tuple[list[Path], ReadStats]:
    """Route every usable line of the export to partition files in `work`; Medication resources (no
    patient) are copied into every partition, where each patient's references pick them up."""
    stats = ReadStats()
    max_line = (limits or ReadLimits.from_settings()).max_line_bytes
    files = [(work / f"part-{i:04d}.ndjson").open("wb") for i in range(parts)]
    medications: list[bytes] = []
    try:
        for rtype, path in export_files(folder):
            try:
                with _open(path) as f:
                    for line in lines(f, max_line, stats):
                        _route(line, rtype, files, medications, stats, parts)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation an EOFError
                raise ExportFileError(f"{path.name} cannot be read to its end ({type(e).__name__})") from None
        for out in files:
            out.writelines(medications)
    finally:
        for out in files:
            out.close()
    return [work / f"part-{i:04d}.ndjson" for i in range(parts)], stats


def classify(line: bytes | str) -> tuple[str, str | None]:
    """What one NDJSON line is, and whose: ("blank" | "malformed" | "other_types" | "medication" |
    "no_patient" | "two_patients" | "patient" | "record", patient id). Both engines set lines aside by
    these rules."""
    if not line.strip():
        return "blank", None
    try:
        res = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "malformed", None
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        return "malformed", None
    if res["resourceType"] not in READ_TYPES:
        return "other_types", None
    if res["resourceType"] == "Medication":
        return "medication", None
    pid, two = owner(res)
    if pid is None:
        return ("two_patients" if two else "no_patient"), None
    return ("patient" if res["resourceType"] == "Patient" else "record"), pid


def _route(line: bytes, rtype: str, files: list, medications: list, stats: ReadStats, parts: int) -> None:
    kind, pid = classify(line)
    if kind == "blank":
        return
    stats.lines += 1
    if kind == "malformed":
        stats.malformed += 1
        return
    if kind == "other_types":
        stats.other_types += 1
        return
    stats.resources += 1
    if kind in ("no_patient", "two_patients"):
        setattr(stats, kind, getattr(stats, kind) + 1)
        return
    if kind == "medication":
        medications.append(b"null\t" + line.rstrip(b"\n") + b"\n")
        return
    assert pid is not None
    if kind == "patient":
        stats.patients.add(pid)
    digest = hashlib.blake2b(pid.encode(), digest_size=4).digest()
    # the owner found here travels with the line (a JSON string: no raw tab in it), so the partition's
    # reader does not walk every reference of every resource a second time
    files[int.from_bytes(digest, "big") % parts].write(orjson.dumps(pid) + b"\t" + line.rstrip(b"\n") + b"\n")


def _owned(line: bytes) -> tuple[str | None, dict, int]:
    """(owner, resource, bytes of the resource's line) of a partition line: `"pid"\t{...}`, `null\t{...}`
    for a shared Medication, or plain NDJSON (whose owner is found again)."""
    if line.startswith(b"{"):
        res = orjson.loads(line)
        return patient_of(res), res, len(line)
    head, _, body = line.partition(b"\t")
    return orjson.loads(head), orjson.loads(body), len(body)


def patients_in(
    part: Path, limits: ReadLimits | None = None, too_large: set[str] | None = None
) -> Iterator[tuple[str, list[dict]]]:
    """The patients of one partition with their resources (Medication resources shared by all). A patient
    past the per-patient caps is dropped as soon as it passes them (its id added to `too_large`)."""
    limits = limits or ReadLimits()
    by_patient: dict[str, list[dict]] = {}
    size: dict[str, int] = {}
    dropped: set[str] = set() if too_large is None else too_large
    shared: list[dict] = []
    with part.open("rb") as f:
        for line in f:
            pid, res, n = _owned(line)
            if pid is None:
                shared.append(res)
                continue
            if pid in dropped:
                continue
            size[pid] = size.get(pid, 0) + n
            mine = by_patient.setdefault(pid, [])
            mine.append(res)
            if size[pid] > limits.max_patient_bytes or len(mine) > limits.max_patient_resources:
                dropped.add(pid)
                del by_patient[pid]  # freed now; the rest of this patient's lines are read one at a time
    for pid, resources in by_patient.items():
        if any(r.get("resourceType") == "Patient" for r in resources):
            yield pid, resources + shared
