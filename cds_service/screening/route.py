"""Routing an export's lines to partition files by patient, so a partition holds whole patients.

Each line goes to one of N partition files by a hash of its patient, to the Medications every
partition shares, or aside (counted in ReadStats). With a cohort filter (prefilter.py), lines that name
only patients outside every trial's cohort are counted and not parsed; a block of them judged before a
later Condition brought one of its patients inside is read again at the end, and those lines routed.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from cds_service.screening.bulk import (
    OWNER_UNREAD,
    ExportFileError,
    ReadLimits,
    ReadStats,
    _open,
    _parsed,
    blocks,
    export_files,
)
from cds_service.screening.prefilter import CohortFilter, named_ids, unsettled

ENTRY_TYPES = ("Patient", "Condition")  # files named for them are read first: patients come inside early


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


class Router:
    def __init__(self, files: list[IO[bytes]], stats: ReadStats, cohort: CohortFilter | None) -> None:
        self.files, self.stats, self.cohort = files, stats, cohort
        self.medications: list[bytes] = []
        self.judged: list[Judged] = []

    def block(self, path: Path, offset: int, buf: bytes) -> None:
        """Route one block of whole lines read at `offset` of `path`."""
        if self.cohort is None:
            for line in _lines(buf):
                self.parse(line)
            return
        self._filtered(path, offset, buf)

    def _filtered(self, path: Path, offset: int, buf: bytes) -> None:
        """Lines naming only patients outside are counted, not parsed. In a settled block (prefilter) the
        bytes say whose each line is: the block test finds the lines of patients inside, or, past a few
        of them, each line's ids do. Otherwise each line is tested on its own."""
        cohort = self.cohort
        assert cohort is not None
        settled = cohort.settled(buf)
        spans = cohort.inside_lines(buf) if settled else None
        if spans is not None:  # no Condition in a settled block: the patients inside stay as they are
            done = 0
            for start, end in [*spans, (len(buf), len(buf))]:
                if start > done:
                    self._outside(path, offset + done, start - done, buf.count(b"\n", done, start))
                if end > start:
                    line = buf[start:end]
                    self.take(line, named_ids(line))
                done = end
            return
        pos = offset
        for line in buf.split(b"\n")[:-1]:  # the block ends in a newline
            ids = named_ids(line) if settled else None
            if not line:
                pass
            elif (cohort.added_at.keys().isdisjoint(ids)) if ids is not None else cohort.outside(line):
                self._outside(path, pos, len(line) + 1, 1)  # a Condition in this block may move it
            else:
                self.take(line, ids)
            pos += len(line) + 1

    def _outside(self, path: Path, offset: int, length: int, lines: int) -> None:
        assert self.cohort is not None
        self.stats.lines += lines
        self.stats.outside_cohort += lines
        self._judged(path, offset, length, self.cohort.version)

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
        stale: dict[Path, list[Judged]] = {}
        for j in self.judged:
            if j.version < cohort.version:
                stale.setdefault(j.path, []).append(j)
        for path, js in stale.items():
            with _open(path) as f:
                for j in sorted(js, key=lambda j: j.offset):
                    f.seek(j.offset)
                    for line in _lines(f.read(j.length)):
                        if not cohort.outside(line):
                            self.stats.lines -= 1
                            self.stats.outside_cohort -= 1
                            self.parse(line)

    def take(self, line: bytes, ids: set[bytes] | None = None) -> None:
        """Route a line that is to be read. One whose bytes name a single patient and hide nothing (no
        escape, not a Patient, Condition or Medication) goes to that patient's partition unparsed: its
        worker parses it anyway and finds its owner there (`bulk.patients_in`), so it is parsed once.
        `ids`: the line's `named_ids`, when its block is settled (so the line is)."""
        if ids is None and not unsettled(line):
            ids = named_ids(line)
        if ids is not None and len(ids) == 1:
            try:
                pid = next(iter(ids)).decode()
            except UnicodeDecodeError:  # not UTF-8: parsed here, where it is counted malformed
                pid = None
            if pid:
                self.stats.lines += 1
                out = self.files[part_of(pid, len(self.files))]
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
        out = self.files[part_of(pid, len(self.files))]
        out.write(orjson.dumps(pid) + b"\t" + line.rstrip(b"\n") + b"\n")


def partition(
    folder: Path, work: Path, parts: int, limits: ReadLimits | None = None, cohort: CohortFilter | None = None
) -> tuple[list[Path], ReadStats]:
    """Route every usable line of the export to partition files in `work`; Medication resources (no
    patient) are copied into every partition, where each patient's references pick them up. With a
    cohort filter, lines naming only patients outside every cohort are not parsed (prefilter.py)."""
    stats = ReadStats()
    max_line = (limits or ReadLimits.from_settings()).max_line_bytes
    files = [(work / f"part-{i:04d}.ndjson").open("wb") for i in range(parts)]
    router = Router(files, stats, cohort)
    ordered = sorted(export_files(folder), key=lambda tp: tp[0] not in ENTRY_TYPES)  # stable: names within
    try:
        for _, path in ordered:
            try:
                with _open(path) as f:
                    for offset, buf in blocks(f, max_line, stats):
                        router.block(path, offset, buf)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation an EOFError
                raise ExportFileError(f"{path.name} cannot be read to its end ({type(e).__name__})") from None
        router.recheck()
        for out in files:
            out.writelines(router.medications)
    finally:
        for out in files:
            out.close()
    return [work / f"part-{i:04d}.ndjson" for i in range(parts)], stats
