"""Reading a Bulk Data export (NDJSON, one or more files per resource type, optionally gzipped) and
grouping it by patient without holding it in memory: each line is routed to one of N partition files
by a hash of its patient, so a partition holds whole patients and is small enough to load on its own."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from cds_service.fhir.gather import QUERIES

READ_TYPES = frozenset({t for _, t in QUERIES.values()} | {"Medication"})
_FILE = re.compile(r"^([A-Za-z]+)(?:\.[^.]+)*\.ndjson(?:\.gz)?$")


@dataclass
class ReadStats:
    lines: int = 0
    resources: int = 0
    malformed: int = 0  # not JSON, or not a resource
    no_patient: int = 0  # a resource that names no patient (set aside, as the hook does)
    other_types: int = 0  # resource types no criterion reads
    patients: set[str] = field(default_factory=set)


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
    """The patient a resource belongs to: its own id for a Patient, else its subject/patient reference."""
    if res.get("resourceType") == "Patient":
        return res.get("id") if isinstance(res.get("id"), str) else None
    for key in ("subject", "patient"):
        ref = res.get(key)
        ref = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(ref, str) and "Patient/" in ref:
            return ref.split("Patient/", 1)[1].split("/", 1)[0] or None
    return None


def partition(folder: Path, work: Path, parts: int) -> tuple[list[Path], ReadStats]:
    """Route every usable line of the export to partition files in `work`; Medication resources (no
    patient) are copied into every partition, where each patient's references pick them up."""
    stats = ReadStats()
    files = [(work / f"part-{i:04d}.ndjson").open("wb") for i in range(parts)]
    medications: list[bytes] = []
    try:
        for rtype, path in export_files(folder):
            with _open(path) as f:
                for line in f:
                    _route(line, rtype, files, medications, stats, parts)
        for out in files:
            out.writelines(medications)
    finally:
        for out in files:
            out.close()
    return [work / f"part-{i:04d}.ndjson" for i in range(parts)], stats


def classify(line: bytes | str) -> tuple[str, str | None]:
    """What one NDJSON line is, and whose: ("blank" | "malformed" | "other_types" | "medication" |
    "no_patient" | "patient" | "record", patient id). Both engines set lines aside by these rules."""
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
    pid = patient_of(res)
    if pid is None:
        return "no_patient", None
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
    if kind == "no_patient":
        stats.no_patient += 1
        return
    if kind == "medication":
        medications.append(line.rstrip(b"\n") + b"\n")
        return
    assert pid is not None
    if kind == "patient":
        stats.patients.add(pid)
    digest = hashlib.blake2b(pid.encode(), digest_size=4).digest()
    files[int.from_bytes(digest, "big") % parts].write(line.rstrip(b"\n") + b"\n")


def patients_in(part: Path) -> Iterator[tuple[str, list[dict]]]:
    """The patients of one partition with their resources (Medication resources shared by all)."""
    by_patient: dict[str, list[dict]] = {}
    shared: list[dict] = []
    with part.open("rb") as f:
        for line in f:
            res = orjson.loads(line)
            pid = patient_of(res)
            (by_patient.setdefault(pid, []) if pid else shared).append(res)
    for pid, resources in by_patient.items():
        if any(r.get("resourceType") == "Patient" for r in resources):
            yield pid, resources + shared
