"""`trial-matcher screen INPUT --out OUT_DIR`: a Bulk Data export against every trial, with a funnel.

Every input error is one line and exit 2, never a traceback; text that is not ours (paths, what the
FHIR server sends) is printed with Rich markup off, so `[/x]` in X-Progress is text, not a crash.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cds_service.eligibility.catalog import Catalog
from cds_service.interrupts import INTERRUPTED, Interruption, interrupted_once
from cds_service.screening.bulk import ExportFileError, export_files
from cds_service.screening.output import warm_up, write_all
from cds_service.screening.run import Screening, screen, worker_pool
from cds_service.screening.say import say
from cds_service.screening.workers import BrokenProcessPool, NoWorkers
from cds_service.settings import get_settings


def cmd_screen(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    if bool(args.input) == bool(args.fhir_server):
        say(err, "screen: give either an NDJSON folder or --fhir-server URL")
        return 2
    with interrupted_once() as interruption:
        return _said(args, err, interruption)


def _run(args: argparse.Namespace, err: Console) -> int:
    """The $export (with --fhir-server), then the screen; or a `--since last` re-screen."""
    if args.since:
        from cds_service.worklist.command import screen_since  # a re-screen is the worklist's job

        return screen_since(args, err)
    stamp: list[str | None] = [None]  # the export's transactionTime: where the next `--since last` starts
    if args.fhir_server:
        from cds_service.screening.exported import exported  # the HTTP client only when a server is screened

        folder = exported(args, err, stamp)
    else:
        folder = Path(args.input)
    if folder is None:
        return 2
    if not folder.is_dir() or not export_files(folder):
        say(err, f"screen: {folder} is not a folder of Bulk Data NDJSON files (Patient.ndjson, ...)")
        return 2
    return _screen(folder, args, err, stamp[0])


BROKEN = "a worker process ended abruptly (killed, out of memory, or failed to start); nothing was written"


def _said(args: argparse.Namespace, err: Console, interruption: Interruption) -> int:
    """`_run`, with every way it can stop said in one line, never a traceback (but for a fault of ours): the
    $export and a `--since last` re-screen as well as the screen itself."""
    try:
        return _run(args, err)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a job runner: the workers and work files are gone
        pass
    except Exception as e:
        if not interruption.happened:  # else what a library made of the interruption (DuckDB's, say)
            message = _failure(e)
            if message is None:
                raise
            say(err, f"screen: {message}")
            return 2
    say(err, "screen: interrupted; the outputs in OUT may be incomplete")
    return INTERRUPTED


def _failure(e: Exception) -> str | None:
    """What a screen that failed says (not a fault of ours: a fault is a traceback, None here)."""
    if isinstance(e, (NoWorkers, ExportFileError)):  # out of processes or memory; a corrupt .gz, named
        return str(e)
    if isinstance(e, BrokenProcessPool):  # the out-of-memory killer, say: the screen is incomplete, so it stops
        return BROKEN
    if isinstance(e, OSError):  # the work folder's disk full, too many open files: the kind, not a traceback
        return f"stopped by a file error ({_kind(e)}); work files go to {tempfile.gettempdir()} (TMPDIR)"
    return None


def _kind(e: OSError) -> str:
    """An OSError's type and the system's words for it (`No space left on device`): no file name, no text."""
    return f"{type(e).__name__}: {e.strerror}" if e.strerror else type(e).__name__


def _workers(text: str) -> int:
    """--workers: a number of processes, one at least (0 ended in a traceback)."""
    n = int(text) if text.strip().isdigit() else 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a number of processes, 1 or more, not {text[:20]!r}")
    return n


def _screen(folder: Path, args: argparse.Namespace, err: Console, transaction_time: str | None = None) -> int:
    s = get_settings()
    catalog = Catalog.load(s.mappings_dir, s.trials_dir, horizon_days=s.temporary_horizon_days)
    unknown = [t for t in args.trial or [] if t not in catalog.trials]
    if unknown:
        say(err, f"screen: unknown trial(s): {', '.join(unknown)}")
        return 2
    as_of = args.as_of or s.as_of or date.today()
    dirs = (s.mappings_dir, s.trials_dir, s.temporary_horizon_days)
    if args.engine == "spark":
        result = _on_spark(folder, dirs, as_of, args, err)
        if result is None:
            return 2
    else:
        result = _embedded(folder, dirs, as_of, args, err, catalog)
    try:
        paths = write_all(result, catalog, Path(args.out))
    except OSError as e:  # --out not writable, its disk full: the kind, not a traceback
        say(err, f"screen: cannot write the results to {args.out} ({_kind(e)})")
        return 2
    _summary(err, result, paths)
    if not args.no_store and result.stats.patients:
        from cds_service.worklist.remember import SetupError, remember

        source = args.fhir_server or str(folder.resolve())
        mirror = _mirror(folder, Path(args.out), err) if args.fhir_server else None
        try:
            run_id = remember(s, result.rows, as_of, source, "full", transaction_time, mirror)
        except SetupError as e:
            say(err, f"screen: not stored for the worklist: {e}")
            return 2
        say(err, f"stored as screen run {run_id} (for `worklist`)")
    if not result.stats.patients:
        say(err, "screen: the export holds no Patient resources: nothing to screen")
        return 1
    return 0


def _mirror(folder: Path, out: Path, err: Console) -> str:
    """Keep the export beside the run, for the next `--since last` (worklist/mirror.py)."""
    from cds_service.worklist.mirror import Mirror

    mirror = Mirror((out / "mirror.sqlite3").resolve())
    mirror.reset()
    with err.status("keeping the export for the next --since last"):
        mirror.take(folder)
    return str(mirror.path)


def _embedded(
    folder: Path, dirs: tuple, as_of: date, args: argparse.Namespace, err: Console, catalog: Catalog
) -> Screening:
    columns = (TextColumn("screening"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    # the workers first: they are forked only from a process with no other thread, and the bar runs one
    with worker_pool(args.workers, catalog) as pool, Progress(*columns, TimeElapsedColumn(), console=err,
                                                             transient=False) as bar:  # fmt: skip
        warm_up()
        task = bar.add_task("patients", total=None, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, rate=f"{bar.tasks[0].completed / elapsed:.0f} patients/s")

        return screen(folder, dirs, as_of, args.trial, args.workers, advance, catalog=catalog, pool=pool)


def _on_spark(folder: Path, dirs: tuple, as_of: date, args: argparse.Namespace, err: Console) -> Screening | None:
    try:
        from cds_service.screening.spark import screen_spark
    except ImportError:
        say(err, "screen: the Spark engine needs PySpark 4.0 (pip install '.[spark]') and Java 17+")
        return None
    with err.status(f"screening on Spark ({escape(args.spark_master)})"):
        return screen_spark(folder, dirs, as_of, args.trial, args.spark_master)


def _summary(err: Console, result, paths) -> None:  # type: ignore[no-untyped-def]
    table = Table(title="Feasibility", title_justify="left")
    for col in ("trial", "likely", "possibly", "ineligible", "not assessed"):
        table.add_column(col, justify="right" if col != "trial" else "left")
    shown = ("likely-eligible", "possibly-eligible", "ineligible", "not-assessed")  # every patient in one column
    for trial, c in sorted(result.funnel.statuses.items()):  # the rows' statuses, counted as they came
        table.add_row(trial, *(str(c.get(k, 0)) for k in shown))
    err.print(table)
    st = result.stats
    n = len(st.patients)
    err.print(
        f"{n} patients, {st.resources} resources in {result.seconds:.1f} s ({n / max(result.seconds, 1e-9):.0f} "
        f"patients/s); peak RSS {result.peak_rss_mb:.0f} MiB (largest worker {result.worker_peak_mb:.0f}); "
        f"set aside: {st.malformed} malformed lines, "
        f"{st.too_long} lines over the line limit, {st.no_patient} resources naming no patient, "
        f"{st.two_patients} naming two patients, {st.other_types} of other types; not screened: "
        f"{len(st.too_large)} patients over the per-patient limit; not read (not needed): {st.outside_cohort} "
        "lines of patients outside every trial's cohort",
        markup=False,
    )
    say(err, "wrote " + ", ".join(str(p) for p in paths.values()))


def add_commands(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser(
        "screen",
        help="screen every patient of a Bulk Data export against the trials, with a feasibility funnel",
        description="INPUT is a folder of FHIR Bulk Data NDJSON (Patient.ndjson, Observation.000.ndjson, "
        ".ndjson.gz, ...). Writes patients.csv/.parquet, funnel.csv and funnel.html to OUT_DIR. Exit status: "
        "0 done, 1 no patients in the export, 2 usage error.",
    )
    sc.add_argument("input", nargs="?", help="folder of NDJSON files (or --fhir-server)")
    sc.add_argument("--out", required=True, help="output folder")
    sc.add_argument("--as-of", type=date.fromisoformat, help="evaluation date (default today)")
    sc.add_argument("--trial", action="append", metavar="NCT", help="only this trial (repeatable)")
    sc.add_argument("--workers", type=_workers, default=os.cpu_count() or 1, help="processes (default: cores)")
    sc.add_argument("--engine", choices=["embedded", "spark"], default="embedded", help="embedded (default) or spark")
    sc.add_argument("--spark-master", default="local[*]", help="Spark master URL for --engine spark (default local[*])")
    sc.add_argument("--fhir-server", metavar="URL", help="run a Bulk Data $export of this server (into OUT/export)")
    sc.add_argument("--token", help="bearer token for --fhir-server (default: $TRIAL_MATCHER_EXPORT_TOKEN)")
    sc.add_argument(
        "--max-poll-seconds", type=float, default=120, help="longest wait between status polls (caps Retry-After)"
    )
    sc.add_argument(
        "--since",
        choices=["last"],
        help="with --fhir-server: export only what changed since this server's last stored screen and re-evaluate "
        "the patients it touches, and those whose temporary bar has lifted since",
    )
    sc.add_argument("--no-store", action="store_true", help="do not keep this run for the worklist")
    sc.set_defaults(func=cmd_screen)
