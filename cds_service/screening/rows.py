"""A screen's rows, kept on disk: one per patient and trial, millions for a health system.

Held as dicts in the parent they grew with the export (475 MiB for 100,000 patients, so most of a
machine for five million), while everything else a screen holds is bounded by a partition. So each
batch (a partition's rows, the rows of the patients outside every cohort) is sorted and written to its
own spool file as it arrives, and the rows are read back merged in (patient, trial) order, as often as
the outputs, the store and the summary need them. Nothing but the current row of each batch is held.

The rows of patients outside every cohort (most of a health system) differ only in the patient: they are
kept as one row per trial and the sorted patient ids (`add_uniform`), and built only as they are read.
"""

from __future__ import annotations

import heapq
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from cds_service.scratch import Scratch

_key = itemgetter("patient", "trial")  # the rows' order; in C, as heapq.merge asks it of every row


@dataclass(frozen=True)
class Run:
    """The rows of consecutive patients outside every cohort: `template` (a row per trial, in trial order,
    patient "") for each of `patients`, in order."""

    template: list[dict[str, Any]]
    patients: list[str]


RUN_PATIENTS = 10_000  # patients of one Run at most: what a writer holds of it stays small


def _runs(template: list[dict[str, Any]], patients: list[str], start: int, end: int) -> Iterator[Run]:
    for at in range(start, end, RUN_PATIENTS):
        yield Run(template, patients[at : min(end, at + RUN_PATIENTS)])


class Overlap(Exception):
    """A patient with both uniform and other rows (Rows.segments)."""


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            yield orjson.loads(line)


HELD = 100_000  # rows kept in memory before the batches go to disk (about 65 MiB)
OPEN = 64  # spool files merged into one past this, so reading them back stays within the open-file limit


class Rows:
    """The rows of one screen, in (patient, trial) order; iterable any number of times. Batches are held
    in memory until there are more than HELD rows, then spooled to files in their own temporary folder,
    removed with the object."""

    def __init__(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        self._folder: Path | None = None
        self._held: list[list[dict[str, Any]]] = []
        self._files: list[Path] = []
        self._uniform: list[tuple[list[dict[str, Any]], list[str]]] = []
        self._count = self._written = 0
        self.add(list(rows))

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Keep one batch (sorted here)."""
        if not rows:
            return
        rows.sort(key=_key)
        self._count += len(rows)
        self._held.append(rows)
        if self._count > HELD:
            for batch in self._held:
                self._spool(batch)
            self._held = []
        if len(self._files) > OPEN:
            merged = list(self._files)
            self._spool(heapq.merge(*(_read(p) for p in merged), key=_key))
            for path in merged:
                path.unlink()
            self._files = self._files[len(merged) :]

    def add_uniform(self, template: list[dict[str, Any]], patients: list[str]) -> None:
        """A row of `template` (one per trial, in trial order) for each of `patients` (sorted), with the
        patient's id. Held as that: 8 bytes a patient (the ids are the screen's own strings), where the
        rows built, spooled and read back cost about as much as reading those patients' Conditions."""
        if template and patients:
            self._uniform.append((template, patients))
            self._count += len(template) * len(patients)

    def _spool(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._folder is None:
            scratch = Scratch("screen-rows-")
            self._folder = scratch.path
            weakref.finalize(self, scratch.remove)
        self._written += 1
        path = self._folder / f"batch-{self._written:06d}.ndjson"
        with path.open("wb") as f:
            f.writelines(orjson.dumps(r) + b"\n" for r in rows)
        self._files.append(path)

    def segments(self) -> Iterator[dict[str, Any] | Run]:
        """The rows in the same order, with the patients of the one uniform batch between two evaluated
        rows given as Runs (of at most RUN_PATIENTS), not row by row: what a CSV writes as text. With
        several uniform batches, row by row. Raises Overlap if a uniform patient also has other rows
        (never, by construction: a patient is either outside every cohort or evaluated)."""
        if len(self._uniform) != 1:
            yield from self
            return
        template, patients = self._uniform[0]
        done = 0
        for r in heapq.merge(*self._held, *(_read(p) for p in self._files), key=_key):
            at = bisect_left(patients, r["patient"], done)
            if at < len(patients) and patients[at] == r["patient"]:
                raise Overlap(r["patient"])
            yield from _runs(template, patients, done, at)
            done = at
            yield r
        yield from _runs(template, patients, done, len(patients))

    @property
    def spooled(self) -> bool:
        return bool(self._files)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """A generator, so that it keeps the Rows (and so their spilled batches, removed when it goes) alive
        while it is read: `for r in screen(...).rows` drops the Rows once the iterator is made."""
        uniform = (_expand(template, patients) for template, patients in self._uniform)
        yield from heapq.merge(*self._held, *(_read(p) for p in self._files), *uniform, key=_key)

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Rows, list)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by content


def _expand(template: list[dict[str, Any]], patients: list[str]) -> Iterator[dict[str, Any]]:
    return chain.from_iterable([{**t, "patient": pid} for t in template] for pid in patients)
