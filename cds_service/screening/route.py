"""Routing an export's lines to partitions by patient, so a partition holds whole patients.

Each line goes to one of N partitions by a hash of its patient, to the Medications every partition
shares, or aside (counted in ReadStats). With a cohort filter (prefilter.py), lines that name only
patients outside every trial's cohort are counted and not parsed; a block of them judged before a later
Condition brought one of its patients inside is read again at the end, and those lines routed.

Several routers can share the work (spans.py): each writes its own file of each partition (a partition
is the list of those files, and the Medications), and the lines each left unparsed are read again against
the patients the others brought inside (`recheck_across`).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from cds_service.fhir.facts import ENTRY_TYPES
from cds_service.screening.bulk import (
    EXPORT_FILE,
    OWNER_UNREAD,
    ExportFileError,
    ReadLimits,
    ReadStats,
    _open,
    _parsed,
    export_files,
    unmarked,
)
from cds_service.screening.prefilter import CohortFilter, Scanned, named_ids, scan, unread_only, unsettled
from cds_service.screening.spans import Span, span_blocks


def is_entry_file(path: Path) -> bool:
    """Whether the export file is named for a resource type a cohort entry reads (Patient, Condition): those
    files are read first, so patients come inside early."""
    m = EXPORT_FILE.match(path.name)
    return m is not None and m.group(1) in ENTRY_TYPES


def part_of(pid: str, parts: int) -> int:
    """The partition a patient's lines go to."""
    return int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=4).digest(), "big") % parts


def _lines(buf: bytes) -> list[bytes]:
    """The lines of a block, newline-terminated only (a raw CR is JSON whitespace, not a line's end)."""
    return [line for line in buf.split(b"\n") if line]


@dataclass(frozen=True)
class Judged:
    """A block of lines some of which were judged outside when `version` patients had come inside."""

    path: Path
    offset: int
    length: int
    version: int


KNOWN_PATIENTS = 50_000  # a router's memo of patients' partitions: a few MiB, whatever the export


class PartFiles:
    """One router's file of each partition (`part-NNNN.<tag>.ndjson`), each opened when first written, to
    append: the routers of one process write theirs in turn."""

    def __init__(self, work: Path, parts: int, tag: str) -> None:
        self.work, self.parts, self.tag = work, parts, tag
        self.open: dict[int, IO[bytes]] = {}
        self.known: dict[str, int] = {}  # patient -> partition, at most KNOWN_PATIENTS of them

    def of(self, pid: str) -> IO[bytes]:
        i = self.known.get(pid)
        if i is None:  # hashed once per patient while the memo holds them, not once per line
            if len(self.known) >= KNOWN_PATIENTS:
                self.known.clear()
            i = self.known[pid] = part_of(pid, self.parts)
        out = self.open.get(i)
        if out is None:
            out = self.open[i] = (self.work / f"part-{i:04d}.{self.tag}.ndjson").open("ab")
        return out

    def close(self) -> None:
        for out in self.open.values():
            out.close()
        self.open.clear()


def partition_files(work: Path, parts: int) -> list[list[Path]]:
    """Each partition's files, written by every router, and the Medications all of them share."""
    shared = [work / MEDICATIONS] if (work / MEDICATIONS).exists() else []
    return [sorted(work.glob(f"part-{i:04d}.*.ndjson")) + shared for i in range(parts)]


MEDICATIONS = "medications.ndjson"


def reread(judged: Iterable[Judged]) -> Iterator[bytes]:
    """The lines of judged spans, read again: each file opened once, its spans in offset order."""
    by_path: dict[Path, list[Judged]] = {}
    for j in judged:
        by_path.setdefault(j.path, []).append(j)
    for path, js in by_path.items():
        with _open(path) as f:
            for j in sorted(js, key=lambda j: j.offset):
                f.seek(j.offset)
                yield from _lines(unmarked(f.read(j.length)))  # as they were read the first time


class Router:
    def __init__(self, files: PartFiles, stats: ReadStats, cohort: CohortFilter | None) -> None:
        self.files, self.stats, self.cohort = files, stats, cohort
        self.medications: list[bytes] = []
        self.judged: list[Judged] = []

    def block(self, path: Path, offset: int, buf: bytes) -> None:
        """Route one block of whole lines read at `offset` of `path`. A block of types no criterion reads is
        counted, not parsed (prefilter.unread_only). A file named for Patients or Conditions is parsed line
        by line without the bytes test: it holds lines that are always read, and testing each for it first
        cost about as much as the parse (a line that is not one is parsed too, which the filter may always
        do: only its count differs)."""
        entry = is_entry_file(path)
        if not entry and (lines := unread_only(buf)):
            self.stats.lines += lines
            self.stats.other_types += lines
        elif self.cohort is None or entry:
            for line in _lines(buf):
                self.parse(line)
        else:
            self._filtered(path, offset, buf)

    def _filtered(self, path: Path, offset: int, buf: bytes) -> None:
        """Lines naming only patients outside are counted, not parsed. The compiled scan judges each line on
        its own in one pass (`prefilter.scan`). Without it: in a settled block (prefilter) the bytes say
        whose each line is: the block test finds the lines of patients inside, or, past a few of them, each
        line's ids do. Otherwise each line is tested on its own."""
        cohort = self.cohort
        assert cohort is not None
        if (scanned := scan(buf, cohort.added_at)) is not None:  # judged against the patients inside now
            self._scanned(path, offset, buf, scanned, cohort.version)
            return
        lines = cohort.settled(buf)
        spans = cohort.inside_lines(buf) if lines else None
        if spans is not None:  # no Condition in a settled block: the patients inside stay as they are
            self._count_outside(lines - len(spans))  # each span is one line
            done = 0
            for start, end in [*spans, (len(buf), len(buf))]:
                if start > done:
                    self._judged(path, offset + done, start - done, cohort.version)
                if end > start:
                    line = buf[start:end]
                    self.take(line, named_ids(line))
                done = end
            return
        settled = bool(lines)
        pos, inside = offset, cohort.added_at.keys()
        for line in buf.split(b"\n")[:-1]:  # the block ends in a newline
            if not line:
                pass
            elif not settled and unsettled(line):  # the bytes cannot say whose (CohortFilter.outside): read
                self.parse(line)
            else:
                ids = named_ids(line)
                if ids and inside.isdisjoint(ids):
                    self._count_outside(1)  # a Condition later in this block may move it: judged
                    self._judged(path, pos, len(line) + 1, cohort.version)
                else:
                    self.take(line, ids)
            pos += len(line) + 1

    def _scanned(self, path: Path, offset: int, buf: bytes, scanned: Scanned, version: int) -> None:
        """Route a block as `prefilter.scan` judged its lines, against the patients inside at `version`: a
        line judged outside before a Condition further on brought its patient inside is read again at the
        end (`recheck`), as in the block test."""
        for start, end, what in scanned:
            if what is None:
                self.parse(buf[start:end])
            elif isinstance(what, int):
                self._count_outside(what)
                self._judged(path, offset + start, end - start, version)
            else:
                self.take(buf[start:end], what)

    def _count_outside(self, lines: int) -> None:
        self.stats.lines += lines
        self.stats.outside_cohort += lines

    def _judged(self, path: Path, offset: int, length: int, version: int) -> None:
        """Remember lines left unparsed, as spans of lines judged against the same patients."""
        last = self.judged[-1] if self.judged else None
        if last and last.path is path and last.version == version and last.offset + last.length == offset:
            self.judged[-1] = Judged(path, last.offset, last.length + length, version)
        else:
            self.judged.append(Judged(path, offset, length, version))

    def recheck(self) -> None:
        """Read again the lines left unparsed before the last patient came inside, and route those that
        name a patient who came inside since they were judged."""
        cohort = self.cohort
        if cohort is None:
            return
        for line in reread(j for j in self.judged if j.version < cohort.version):
            if not cohort.outside(line):
                self.stats.lines -= 1
                self.stats.outside_cohort -= 1
                self.parse(line)

    def take(self, line: bytes, ids: set[bytes]) -> None:
        """Route a line that is to be read, whose bytes hide nothing (not `unsettled`: no escape, not a
        Patient, Condition or Medication; the caller has tested it or its block). One naming a single
        patient (`ids`: its `named_ids`) goes to that patient's partition unparsed: its worker parses it
        anyway and finds its owner there (`bulk.patients_in`), so it is parsed once."""
        if len(ids) == 1:
            try:
                pid = next(iter(ids)).decode()
            except UnicodeDecodeError:  # not UTF-8: parsed here, where it is counted malformed
                pid = None
            if pid:
                self.stats.lines += 1
                out = self.files.of(pid)
                out.write(OWNER_UNREAD + b"\t" + line.rstrip(b"\n") + b"\n")
                return
        self.parse(line)

    def parse(self, line: bytes) -> None:
        kind, pid, res = _parsed(line)
        stats = self.stats
        if kind == "blank":
            return
        stats.lines += 1
        stats.tally(kind)
        if kind in ("malformed", "other_types", "no_patient", "two_patients"):
            return
        if kind == "medication":
            self.medications.append(b"null\t" + line.rstrip(b"\n") + b"\n")
            return
        assert pid is not None and res is not None
        if kind == "patient":
            stats.patients.add(pid)
        elif self.cohort is not None:
            self.cohort.note(res, pid)
        # the owner found here travels with the line (a JSON string: no raw tab in it), so the partition's
        # reader does not walk every reference of every resource a second time
        out = self.files.of(pid)
        out.write(orjson.dumps(pid) + b"\t" + line.rstrip(b"\n") + b"\n")


@dataclass
class Routed:
    """What one router did: its counts, the Medications it found, the spans of lines it left unparsed,
    and the patients it knew inside at the end (what those lines were last judged against): `base`, the
    set it was given, and `known`, those it added. A worker returns only what it added, and the screen
    process sets `base` to the one set it gave every router of a phase: returned whole, each router's set
    was a copy of every patient inside (100,000 patients in 85 spans: 0.7 GiB in the screen process)."""

    stats: ReadStats
    medications: list[bytes]
    judged: list[Judged]
    known: frozenset[bytes]
    where: tuple[str, int] = ("", 0)  # its first span's file and offset: routers finish in any order
    base: frozenset[bytes] = frozenset()


def route(spans: list[Span], files: PartFiles, max_line: int, cohort: CohortFilter | None) -> Routed:
    """Route the lines of `spans` in order, then read again those judged before a later Condition."""
    router = Router(files, ReadStats(), cohort)
    try:
        for span in spans:
            try:
                for offset, buf in span_blocks(span, max_line, router.stats):
                    router.block(span.path, offset, buf)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation an EOFError
                name = span.path.name
                raise ExportFileError(f"{name} cannot be read to its end ({type(e).__name__})") from None
        router.recheck()
    finally:
        files.close()
    known = frozenset(cohort.added_at) if cohort is not None else frozenset()
    where = (str(spans[0].path), spans[0].start) if spans else ("", 0)
    return Routed(router.stats, router.medications, router.judged, known, where)


def recheck_across(done: list[Routed], files: PartFiles, stats: ReadStats, cohort: CohortFilter) -> None:
    """Route the lines a router left unparsed that name a patient another router brought inside (and none
    it knew of: those it routed itself), counting them in `stats` as read rather than outside."""
    inside = cohort.added_at.keys()
    late = Router(files, stats, cohort)
    beyond: dict[int, set[str]] = {}  # inside beyond each phase's base (one set shared by its routers), once
    try:
        for r in done:
            if id(r.base) not in beyond:
                beyond[id(r.base)] = inside - r.base
            news = beyond[id(r.base)] - r.known
            if not news:
                continue
            for line in reread(r.judged):
                ids = named_ids(line)
                if not news.isdisjoint(ids) and r.known.isdisjoint(ids) and r.base.isdisjoint(ids):
                    stats.lines -= 1
                    stats.outside_cohort -= 1
                    late.parse(line)
    finally:
        files.close()


def write_medications(work: Path, medications: list[bytes]) -> None:
    with (work / MEDICATIONS).open("wb") as out:
        out.writelines(medications)


def entry_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The export's files named for the resources a cohort entry reads, and the others (names sorted)."""
    files = [p for _, p in export_files(folder)]
    return [p for p in files if is_entry_file(p)], [p for p in files if not is_entry_file(p)]


def partition(
    folder: Path, work: Path, parts: int, limits: ReadLimits | None = None, cohort: CohortFilter | None = None
) -> tuple[list[list[Path]], ReadStats]:
    """Route every usable line of the export, in one process, to partitions in `work` (each a list of
    files); Medication resources (no patient) go to a file every partition shares, where each patient's
    references pick them up. With a cohort filter, lines naming only patients outside every cohort are not
    parsed (prefilter.py)."""
    max_line = (limits or ReadLimits.from_settings()).max_line_bytes
    entry, rest = entry_files(folder)
    done = route([Span(p) for p in entry + rest], PartFiles(work, parts, "all"), max_line, cohort)
    write_medications(work, done.medications)
    return partition_files(work, parts), done.stats
