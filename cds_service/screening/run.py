"""Screening across cores. Each worker (workers.py) has the catalogue (forked from the screen process, or
loading it once when spawned: `worker_pool`), routes spans of the export to its own file of each partition
(route.py, spans.py; the screen process routes spans too until a worker has started), then evaluates
whole partitions, returning one row per patient and trial and its share of the
funnel counts (so nothing per-criterion per-patient crosses back to the parent)."""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.report import TrialResult, TrialVerdict
from cds_service.fhir.kept import Kept
from cds_service.fhir.normalize import SharedMedications
from cds_service.runtime import collector_paused, tune_gc
from cds_service.scratch import scratch_folder
from cds_service.screening.bulk import ReadLimits, ReadStats, export_files, patients_in
from cds_service.screening.funnel import Funnel, row
from cds_service.screening.prefilter import CohortFilter
from cds_service.screening.route import (
    PartFiles,
    Routed,
    entry_files,
    part_of,
    partition_files,
    recheck_across,
    route,
    write_medications,
)
from cds_service.screening.rows import Rows
from cds_service.screening.spans import Span, spans_of
from cds_service.screening.workers import Workers
from cds_service.screening.workers import start as start_workers
from cds_service.settings import get_settings

_CATALOG: Catalog | None = None


def _init(
    mappings_dir: str, trials_dir: str, horizon_days: int, strict: bool = False, trials: tuple[str, ...] | None = None
) -> None:
    """A worker's catalogue, then the collector tuned as the service tunes it: a partition holds tens of
    thousands of parsed resources, and Python's default threshold made the collector walk them again and
    again (1.3 s of 1.9 s reading 300 patients). `trials`: the ids the screen process loaded; a worker that
    finds others (the folder changed or went since) raises rather than screen against them."""
    catalog = Catalog.load(mappings_dir, trials_dir, strict, horizon_days)
    if trials is not None and tuple(sorted(catalog.trials)) != trials:
        raise RuntimeError("the trials folder changed since the screen loaded it")
    _adopt(catalog)


def _adopt(catalog: Catalog) -> None:
    """A worker's catalogue: loaded (`_init`), or the screen process's own in a forked worker."""
    global _CATALOG
    _CATALOG = catalog
    tune_gc(get_settings().gc_threshold)


def _forked(catalog: Catalog) -> None:
    """A forked pool worker's start: the screen process's catalogue, and the signals a spawned one has."""
    _worker_signals()
    _adopt(catalog)


def _spawned(*init: Any) -> None:
    """A spawned pool worker's start (`_init`'s arguments). A catalogue that cannot load is said in one line,
    as the command's own errors are, and the worker ends: the screen stops on the lost worker."""
    _worker_signals()
    try:
        _init(*init)
    except Exception as e:
        print(f"screen worker: cannot load the catalogue ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
        os._exit(1)


def _worker_signals() -> None:
    """SIGTERM's default: a handler the screen process installed (a job runner's graceful SIGTERM) would keep
    a forked worker alive through `Workers.stop`, which then waits for it for ever. Ctrl-C reaches the whole
    process group: the screen process stops the workers, which ignore it (an idle one died of it, printing a
    traceback). Only in pool workers: Spark's and a test's `_init` keep their own."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_pool(workers: int, catalog: Catalog) -> Workers:
    """The screen's workers with `catalog`: forked with this process's own, or spawned, loading it from its
    folders (`Catalog.source`; a catalogue built otherwise cannot be). See `workers.start`."""
    spawn: tuple | str = "a catalogue not loaded from its folders cannot be loaded by spawned workers"
    if catalog.source is not None:
        strict, trials = catalog.normalizer.strict, tuple(sorted(catalog.trials))
        spawn = (_spawned, (*catalog.source, catalog.engine.horizon.days, strict, trials))
    return start_workers(workers, (_forked, (catalog,)), spawn)


def evaluate_patients(
    patients: Iterable[tuple[str, list[dict]]],
    as_of: date,
    trial_ids: list[str] | None,
    inside: bool = False,
    shared: list[dict] | None = None,
) -> tuple[list[dict[str, Any]], Funnel]:
    """Rows and funnel counts of whole patient records (an export is the whole record: every source
    complete), with this worker's catalogue. Both engines evaluate through here. `inside`: every patient
    is known to be inside some trial's cohort (`cohort_first`). `shared`: the Medication resources every
    record may name, filled by the time the first patient comes (bulk.patients_in), indexed once."""
    assert _CATALOG is not None
    rows: list[dict[str, Any]] = []
    funnel = Funnel()
    index = None
    for pid, resources in patients:
        if shared is not None and index is None:
            index = _CATALOG.normalizer.shared_medications(shared)
        for r in cohort_first(_CATALOG, pid, resources, as_of, trial_ids, inside, index):
            rows.append(row(pid, r))
            funnel.add(r)
    return rows, funnel


def cohort_first(
    catalog: Catalog,
    pid: str,
    resources: list[dict],
    as_of: date,
    trial_ids: list[str] | None,
    inside: bool = False,
    shared: SharedMedications | None = None,
) -> list[TrialVerdict | TrialResult]:
    """The patient's results (verdicts: what a screen keeps, Catalog.verdicts), reading the whole record only
    for a patient inside some trial's cohort (`Catalog.outside_facts`). `inside`: the partition step's cohort
    filter found a Condition of this patient that alone opens some entry, so the whole record's Conditions
    do too (a Condition can only add to an entry): the entry-only test is skipped. `shared`: Medication
    resources outside `resources` its references may name (Catalog.facts).
    """
    if inside:
        facts = catalog.facts(resources, pid, shared=shared)
    else:  # outside every cohort: every trial stops at its entry, no criterion read
        facts = catalog.cohort_first_facts(resources, pid, trial_ids=trial_ids, shared=shared)
    return catalog.verdicts(facts, as_of, trial_ids)


CODE_KEY_BYTES, CODE_KEYS = 2048, 20_000  # the entry test's cache of Conditions by code (opens_an_entry)
_UNSEEN: Any = object()  # not in that cache (None in it means "read the whole Condition")


def opens_an_entry(catalog: Catalog, trial_ids: list[str] | None) -> Callable[[dict, str], bool]:
    """Whether one Condition alone opens some chosen trial's entry (in, or unknown for a Condition that
    cannot be interpreted): the test the partition step's cohort filter puts to each Condition.

    A Condition reduced to its code and verification status is all the reader reads of one whose code names
    no condition group the maps know (`Normalizer._condition` reads the rest only for a Condition it keeps
    as a fact): for that one the reduced answer is the whole one's, unreadable elements included. So the
    reduced answer, cached by those two elements as written, settles most Conditions (hypertension, in a
    clinic's export). One kept as a fact is read whole: its code may open no entry while an unreadable
    onset date leaves the patient's entry unknown, which opens it (a reduction to the code alone once
    closed it, and the screen called ineligible a patient the hook called not assessed). In strict mode the
    reduced resource would fail validation, so every Condition is read whole.
    """
    live = catalog.live(trial_ids)
    # True or False: the whole one's answer; None: read the whole one. At most CODE_KEYS (about 40 MiB)
    by_code: Kept[bytes, bool | None] = Kept(CODE_KEYS)

    def opens_whole(condition: dict, pid: str) -> bool:
        return catalog.opens_some_entry(catalog.facts([condition], pid), live)

    def reduced(condition: dict, pid: str) -> bool | None:
        facts = catalog.facts([{"resourceType": "Condition", **condition}], pid)
        return None if facts.conditions else catalog.opens_some_entry(facts, live)

    def opens(condition: dict, pid: str) -> bool:
        if catalog.normalizer.strict:
            return opens_whole(condition, pid)
        deciding = {"code": condition.get("code"), "verificationStatus": condition.get("verificationStatus")}
        try:
            key = orjson.dumps(deciding, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):  # nested past what orjson writes (254 levels): no key
            return opens_whole(condition, pid)
        if len(key) > CODE_KEY_BYTES:  # codes as written are short; a hostile one is not kept
            return opens_whole(condition, pid)
        said = by_code.get(key, _UNSEEN)
        if said is _UNSEEN:
            said = by_code.keep(key, reduced(deciding, pid))
        return opens_whole(condition, pid) if said is None else said

    return opens


def screen_partition(
    job: tuple[list[Path], date, list[str] | None, ReadLimits, set[str] | None],
) -> tuple[list[dict[str, Any]], Funnel, ReadStats, float]:
    """Rows and funnel of one partition's patients (of those in `only`, when given), what its reading
    counted (the patients left out for being over the per-patient caps, and the resources of the lines
    the partition step routed unparsed: bulk.patients_in), and this worker's peak RSS so far (MiB)."""
    part, as_of, trial_ids, limits, only = job
    with collector_paused():
        return _screen_partition(part, as_of, trial_ids, limits, only)


def _screen_partition(
    part: list[Path], as_of: date, trial_ids: list[str] | None, limits: ReadLimits, only: set[str] | None
) -> tuple[list[dict[str, Any]], Funnel, ReadStats, float]:
    counted = ReadStats()
    shared: list[dict] = []  # the partition's Medication resources, indexed once for all its patients
    patients = patients_in(part, limits, counted.too_large, only, counted, shared)
    rows, funnel = evaluate_patients(patients, as_of, trial_ids, only is not None, shared)
    return rows, funnel, counted, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_outside(
    rows: Rows, funnel: Funnel, catalog: Catalog, patients: Iterable[str], as_of: date, trial_ids: list[str] | None
) -> None:
    """Rows and funnel counts of patients none of whose Conditions opens any entry (the cohort filter's
    outside). Each gets what `cohort_first` gives such a record: the results of a record with no Condition
    (every entry closed, no criterion read), the same for all of them, so built once."""
    results = catalog.verdicts(catalog.facts([], "outside"), as_of, trial_ids)
    pids = sorted(patients)
    for r in results:
        funnel.add(r, len(pids))
    rows.add_uniform(sorted((row("", r) for r in results), key=lambda r: r["trial"]), pids)


PART_BYTES = 32 * 1024 * 1024  # NDJSON per partition: a worker holds one partition's resources at a time
GZIP_RATIO = 8  # NDJSON of FHIR compresses about this much


def partitions_for(folder: Path, workers: int) -> int:
    """Enough partitions that each holds about PART_BYTES of NDJSON, so a worker's memory stays bounded
    whatever the export's size; at least four per worker, so the cores stay busy to the end."""
    size = sum(p.stat().st_size * (GZIP_RATIO if p.suffix == ".gz" else 1) for _, p in export_files(folder))
    return max(4 * workers, 8, -(-size // PART_BYTES))


@dataclass
class Screening:
    rows: Rows | list[dict[str, Any]]  # in (patient, trial) order
    funnel: Funnel
    stats: ReadStats
    seconds: float
    peak_rss_mb: float
    worker_peak_mb: float = 0.0  # the largest worker's: bounded by a partition, not by the export


def screen(
    folder: Path,
    catalog_dirs: tuple[Path, Path, int],
    as_of: date,
    trial_ids: list[str] | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    limits: ReadLimits | None = None,
    catalog: Catalog | None = None,
    pool: Workers | None = None,
) -> Screening:
    """Partition the export on disk, then evaluate the partitions across `workers` processes. `catalog`:
    the one loaded from `catalog_dirs` already, if the caller has it; `pool`: its `worker_pool`, if the
    caller made it (before starting a thread of its own), left for the caller to close, or terminated when
    the screen fails (no worker goes on writing into the partitions deleted then)."""
    start = time.perf_counter()
    limits = limits or ReadLimits.from_settings()
    mappings_dir, trials_dir, horizon = catalog_dirs
    catalog = catalog or Catalog.load(mappings_dir, trials_dir, horizon_days=horizon)
    cohort = CohortFilter(opens_an_entry(catalog, trial_ids))
    with (
        scratch_folder("screen-") as tmp,
        nullcontext(pool) if pool else worker_pool(workers, catalog) as pool,
    ):
        try:
            parts, stats = route_export(pool, folder, Path(tmp), limits, cohort, trial_ids, workers)
            inside_ids = set(map(bytes.decode, cohort.added_at))
            inside = [set[str]() for _ in parts]  # each partition's patients inside, for its worker
            for pid in inside_ids:
                inside[part_of(pid, len(parts))].add(pid)
            jobs = [(p, as_of, trial_ids, limits, mine) for p, mine in zip(parts, inside, strict=True)]
            pending = pool.unordered(screen_partition, jobs)  # submitted: the workers start on them now
            rows, funnel = Rows(), Funnel()
            outside = stats.patients - inside_ids
            add_outside(rows, funnel, catalog, outside, as_of, trial_ids)
            if progress:
                progress(len(outside))
            worker_peak = 0.0
            for part_rows, part_funnel, counted, peak in pending:
                stats.absorb(counted)
                worker_peak = max(worker_peak, peak)
                rows.add(part_rows)
                funnel.merge(part_funnel)
                if progress:
                    progress(len({r["patient"] for r in part_rows}))
        except BaseException:
            pool.stop()
            raise
    return Screening(rows, funnel, stats, time.perf_counter() - start, peak_rss_mb(), worker_peak)


_ENTRY_TESTS: dict[tuple[str, ...], Callable[[dict, str], bool]] = {}  # a worker's, by the trials chosen


def route_span(job: tuple[Span, Path, int, int, frozenset[bytes], list[str] | None]) -> Routed:
    """Route one span of the export (in a worker) to this process's file of each partition, with the
    patients the entry files brought inside; Conditions in the span may bring in more."""
    span, work, parts, max_line, inside, trial_ids = job
    key = tuple(trial_ids or ())
    if key not in _ENTRY_TESTS:
        assert _CATALOG is not None
        _ENTRY_TESTS[key] = opens_an_entry(_CATALOG, trial_ids)
    cohort = CohortFilter(_ENTRY_TESTS[key], inside)
    routed = route([span], PartFiles(work, parts, f"w{os.getpid()}"), max_line, cohort)
    return replace(routed, known=routed.known - inside)  # the screen process has `inside` (Routed.base)


def route_export(
    pool: Workers,
    folder: Path,
    work: Path,
    limits: ReadLimits,
    cohort: CohortFilter,
    trial_ids: list[str] | None,
    workers: int,
) -> tuple[list[list[Path]], ReadStats]:
    """Route the export to partitions in `work` (`partitions_for`), in spans across the workers. The files
    named for Patients and Conditions go first, so the patients inside are known before the rest is read;
    then the rest; then the lines one router left unparsed that another's Conditions brought inside. This
    process routes spans itself only until a worker has started (`until_ready`), so a small export does
    not wait idle for the workers, and a large one is routed by the workers alone."""
    parts, max_line = partitions_for(folder, workers), limits.max_line_bytes
    entry, rest = entry_files(folder)
    ready = pool.submit(os.getpid)  # answered once a worker has loaded its catalogue
    done: list[Routed] = []

    def phase(spans: list[Span]) -> None:
        spans = until_ready(spans, ready, lambda s: done.append(route([s], files, max_line, cohort)))
        known = frozenset(cohort.added_at)
        routed = pool.unordered(route_span, [(s, work, parts, max_line, known, trial_ids) for s in spans])
        done.extend(replace(d, base=known) for d in routed)  # one set, shared by every router of the phase
        for d in done:  # what every router found inside, this process's own included
            cohort.learn(d.known)

    files = PartFiles(work, parts, "here")
    first, then = spans_of(entry, workers, fixed=ENTRY_SPAN_BYTES), spans_of(rest, workers)
    phase(first)
    phase(then)
    stats = ReadStats()
    for d in done:
        stats.absorb(d.stats)
    recheck_across(done, PartFiles(work, parts, "late"), stats, cohort)
    # in the export's order, as one process reads them: of two Medications with one id the later is read
    # (Normalizer.shared_medications), and which that is may not depend on which router finished first
    order = {(str(s.path), s.start): i for i, s in enumerate(first + then)}
    in_order = sorted(done, key=lambda d: order.get(d.where, -1))
    write_medications(work, [line for d in in_order for line in d.medications])
    return partition_files(work, parts), stats


# Patient and Condition files in spans of this size whatever the export's: this process takes them one by
# one while the workers start, and a router holds the patient ids of its span (a worker's peak stays flat)
ENTRY_SPAN_BYTES = 1024 * 1024


def until_ready(spans: list[Span], ready: Future, take: Callable[[Span], None]) -> list[Span]:
    """`take` spans here, one at a time, until `ready` is done; the spans left."""
    taken = 0
    while taken < len(spans) and not ready.done():
        take(spans[taken])
        taken += 1
    return spans[taken:]


def peak_rss_mb() -> float:
    """The largest resident set of this process or any finished child (workers), in MiB."""
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return peak / 1024
