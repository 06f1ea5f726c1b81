"""Reading a Bulk Data export (NDJSON, one or more files per resource type, optionally gzipped) and
grouping it by patient without holding it in memory: each line is routed to one of N partition files
by a hash of its patient, so a partition holds whole patients and is small enough to load on its own.

Memory is bounded whatever the export holds: a line longer than `max_line_bytes` is skipped without
being held (read in pieces to its end), and a patient whose held record passes `max_patient_bytes` or
`max_patient_resources` is not screened (a cut record would read as "none on record"). Both are
counted in ReadStats and shown in the funnel page and the command's summary. What is held of a patient
outside every trial's cohort is their Patient and Conditions only (their other lines are not read:
prefilter.py), so the caps count those; such a patient is screened, outside the cohort, however long
the rest of their record."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from cds_service.fhir.queries import QUERIES
from cds_service.fhir.subjects import owner

READ_TYPES = frozenset({t for _, t in QUERIES.values()} | {"Medication"})
# the folder of an export's `deleted` files (a Bulk Data manifest's), beside its own: written by the $export
# step, read by the worklist's mirror (here, so that neither needs the other, nor httpx)
DELETED = "deleted"
EXPORT_FILE = re.compile(r"^([A-Za-z]+)(?:\.[^.]+)*\.ndjson(?:\.gz)?$")


class ExportFileError(Exception):
    """An export file that cannot be read to its end (a corrupt or truncated gzip, an I/O error): the export
    is not screened, since its records would be cut. The message names the file, never its content."""


@dataclass
class ReadStats:
    lines: int = 0
    resources: int = 0
    malformed: int = 0  # not JSON, or not a resource
    no_patient: int = 0  # a resource that names no patient (set aside, as the hook does)
    other_types: int = 0  # resource types no criterion reads (a block of them is counted unparsed, junk too)
    two_patients: int = 0  # a resource whose references name two different patients (set aside)
    too_long: int = 0  # lines over the line cap: skipped unread
    outside_cohort: int = 0  # lines naming only patients outside every trial's cohort: not parsed
    patients: set[str] = field(default_factory=set)
    too_large: set[str] = field(default_factory=set)  # patients over the per-patient cap: not screened

    def tally(self, kind: str) -> None:
        """Count one parsed line of this `classify` kind (its line is counted where it was read)."""
        if kind in ("malformed", "other_types"):
            setattr(self, kind, getattr(self, kind) + 1)
            return
        self.resources += 1
        if kind in ("no_patient", "two_patients"):
            setattr(self, kind, getattr(self, kind) + 1)

    def absorb(self, other: ReadStats) -> None:
        """Add what another reader counted: a router of part of the export, or a worker reading its
        partition (which counts the resources of lines routed unparsed, and the patients over the caps)."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.patients |= other.patients
        self.too_large |= other.too_large


COUNTS = ("lines", "resources", "malformed", "no_patient", "other_types", "two_patients", "too_long", "outside_cohort")


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
        m = EXPORT_FILE.match(path.name)
        if m and path.is_file():
            out.append((m.group(1), path))
    return out


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: Windows tools start files with it, and files joined put it in lines


def unmarked(block: bytes) -> bytes:
    """Whole lines with a byte order mark at the start of a line read as the three spaces JSON allows there:
    orjson refuses the mark, which set a file's first resource aside as malformed (a lupus patient's
    Patient, say), and spaces keep every offset after it where it was (a span is read again by offset). A
    mark inside a line is the character it encodes, left as it is."""
    if b"\xef" not in block:  # one byte: memchr, 20 us a MiB, where the three-byte search takes 0.8 ms
        return block
    if block.startswith(BOM):
        block = b"   " + block[3:]
    return block.replace(b"\n" + BOM, b"\n   ")


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
                yield unmarked(head)
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
            yield unmarked(bytes(buf))
            continue
        stats.too_long += 1
        del buf  # freed before the rest of the line is read
        while tail and not tail.endswith(b"\n"):
            tail = f.readline(piece)


def blocks(f: IO[bytes], max_bytes: int, stats: ReadStats, size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(offset, block) runs of whole lines, each ending in a newline and each line of at most `max_bytes`
    (newline aside), with the offset of the block in the (uncompressed) stream. The cap as in `lines`: a
    longer line is dropped as soon as it passes it, counted in `stats.too_long`. Reading in blocks is what
    lets the cohort filter test thousands of lines in one pass."""
    size = min(size, max_bytes + 1)  # so a line wholly inside one read is within the cap
    rest, rest_at, pos, dropping = bytearray(), 0, 0, False  # grown in place: a long line is not copied
    while data := f.read(size):
        at, pos = pos, pos + len(data)
        cut = data.rfind(b"\n")
        if cut < 0:  # no line ends in this read: the current line grows (or is being dropped)
            if not dropping:
                rest += data
                if len(rest) > max_bytes:
                    stats.too_long += 1
                    rest, dropping = bytearray(), True
            continue
        nl = data.find(b"\n")
        if dropping or len(rest) + nl > max_bytes:
            stats.too_long += not dropping
            start, block = at + nl + 1, data[nl + 1 : cut + 1]
        else:
            whole = not rest and cut + 1 == len(data)  # the usual read: no copy (else one)
            start, block = (rest_at if rest else at), data if whole else b"".join((rest, memoryview(data)[: cut + 1]))
        dropping = False
        if block:
            yield start, unmarked(block)
        rest, rest_at = bytearray(data[cut + 1 :]), at + cut + 1
    if rest and not dropping:
        if len(rest) <= max_bytes:
            yield rest_at, unmarked(bytes(rest) + b"\n")
        else:
            stats.too_long += 1


def classify(line: bytes | str) -> tuple[str, str | None]:
    """What one NDJSON line is, and whose: ("blank" | "malformed" | "other_types" | "medication" |
    "no_patient" | "two_patients" | "patient" | "record", patient id). Both engines set lines aside by
    these rules."""
    kind, pid, _ = _parsed(line)
    return kind, pid


def _parsed(line: bytes | str) -> tuple[str, str | None, dict | None]:
    """`classify`, with the parsed resource."""
    if not line.strip():
        return "blank", None, None
    try:
        res = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "malformed", None, None
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        return "malformed", None, None
    if res["resourceType"] not in READ_TYPES:
        return "other_types", None, res
    if res["resourceType"] == "Medication":
        return "medication", None, res
    pid, two = owner(res)
    if pid is None:
        return ("two_patients" if two else "no_patient"), None, res
    return ("patient" if res["resourceType"] == "Patient" else "record"), pid, res


OWNER_UNREAD = b"true"  # a partition line's head for a line routed by its bytes: its owner is found here


def _owned(line: bytes, stats: ReadStats) -> tuple[str | None, dict | None, int]:
    """(owner, resource, bytes of the resource's line) of a partition line: `"pid"\t{...}`, `null\t{...}`
    for a shared Medication, `true\t{...}` for a line routed by the one patient its bytes name (parsed
    here first: set aside and counted in `stats`, resource None, unless it is that patient's record),
    or plain NDJSON (whose owner is found again)."""
    if line.startswith(b"{"):
        res = orjson.loads(line)
        return patient_of(res), res, len(line)
    head, _, body = line.partition(b"\t")
    if head != OWNER_UNREAD:
        return orjson.loads(head), orjson.loads(body), len(body)
    kind, pid, res = _parsed(body)
    stats.tally(kind)
    if kind == "record":
        return pid, res, len(body)
    return None, None, len(body)  # set aside (a Patient or a Medication is never routed so)


def _partition_lines(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        with path.open("rb") as f:
            yield from f


def patients_in(
    part: Path | list[Path],
    limits: ReadLimits | None = None,
    too_large: set[str] | None = None,
    only: set[str] | None = None,
    stats: ReadStats | None = None,
    medications: list[dict] | None = None,
) -> Iterator[tuple[str, list[dict]]]:
    """The patients of one partition with their resources (Medication resources shared by all: added to
    each record, or, with `medications`, put there once, read before the first patient is yielded). A
    patient past the per-patient caps is dropped as soon as it passes them (its id added to `too_large`).
    With `only`, the lines of other patients are passed over unparsed (those outside every cohort, whose
    rows the screen writes without their records: run.add_outside). `stats` counts the resources of lines
    the partition step routed unread, and those of them set aside."""
    limits = limits or ReadLimits()
    by_patient: dict[str, list[dict]] = {}
    size: dict[str, int] = {}
    dropped: set[str] = set() if too_large is None else too_large
    counted = ReadStats() if stats is None else stats
    shared: list[dict] = [] if medications is None else medications
    for line in _partition_lines([part] if isinstance(part, Path) else part):
        # the owner the router found leads the line as a JSON string; `true`, `null` and plain lines go on
        if only is not None and line.startswith(b'"') and orjson.loads(line.partition(b"\t")[0]) not in only:
            continue
        pid, res, n = _owned(line, counted)
        if res is None:
            continue
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
            yield pid, resources if medications is not None else resources + shared
