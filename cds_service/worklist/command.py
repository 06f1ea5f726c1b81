"""`worklist`, `screening-log` and `screen --since last`: the coordinator's weekly questions, from the store.

Every input error is one line and exit 2. Patient ids go to stdout or the output files (the site asked
for them), never to stderr's progress lines.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cds_service.eligibility.catalog import Catalog
from cds_service.screening.csvsafe import safe_rows
from cds_service.screening.exported import export_token, exported
from cds_service.screening.say import say
from cds_service.settings import Settings, get_settings
from cds_service.worklist import changes, log
from cds_service.worklist.mirror import Mirror, deleted_in
from cds_service.worklist.remember import (
    Reread,
    SetupError,
    from_mirror,
    last_run_of,
    lifted,
    patient_key,
    reevaluate,
    remember,
    touched_patients,
)
from cds_service.worklist.runs import Run, RunStore


def screen_since(args: argparse.Namespace, err: Console) -> int:
    """Re-screen what changed on --fhir-server since its last stored screen."""
    if not args.fhir_server:
        say(err, "screen: --since last needs --fhir-server (an NDJSON folder has no earlier state to compare)")
        return 2
    s = get_settings()
    try:
        key = patient_key(s)
    except SetupError as e:
        say(err, f"screen: {e}")
        return 2
    store = RunStore(s.database_url)
    last = last_run_of(store, args.fhir_server)
    if last is None:
        say(err, "screen: no stored screen of this server to start from; run `screen --fhir-server URL` once first")
        return 2
    catalog = Catalog.load(s.mappings_dir, s.trials_dir, horizon_days=s.temporary_horizon_days)
    as_of = args.as_of or s.as_of or date.today()
    started = time.perf_counter()
    stamp: list[str | None] = [None]
    target = exported(args, err, stamp, since=last.transaction_time)
    if target is None:
        return 2
    done_export = time.perf_counter()
    state_bars = lifted(store.state(last, store.runs()), last.as_of, as_of)
    reread = _reevaluate(last, target, state_bars, key, catalog, as_of, args, s, export_token(args), err)
    evaluated = time.perf_counter()
    rows = [r for r in reread.rows if not args.trial or r["trial"] in args.trial]
    run_id = remember(s, rows, as_of, args.fhir_server, "incremental", stamp[0], last.mirror)
    screened = {r["patient"] for r in rows} - reread.gone
    say(err, f"re-screened {len(screened)} patient(s): {len(reread.touched)} with changes, "
             f"{len(reread.lifted - reread.touched)} whose bar lifted; {reread.not_found} no longer on record; "
             f"stored as screen run {run_id}; $export {done_export - started:.1f} s, re-read and evaluated in "
             f"{evaluated - done_export:.1f} s")  # fmt: skip
    return 0


def _reevaluate(
    last: Run, changes: Path, bars: set[str], key: str | None, catalog: Catalog, as_of: date,
    args: argparse.Namespace, s: Settings, token: str | None, err: Console,
) -> Reread:  # fmt: skip
    """From the last full screen's mirror when it is there; else each patient read again from the server
    through the hook's searches (pseudonyms cannot be read back: their lifted bars show by date alone)."""
    if last.mirror and Path(last.mirror).is_file():
        with err.status("re-evaluating from the mirror"):
            return from_mirror(Mirror(Path(last.mirror)), changes, bars, key, catalog, as_of, args.trial,
                               args.fhir_server)  # fmt: skip
    touched = touched_patients(changes, args.fhir_server)
    untraced = sum(1 for rtype, _ in deleted_in(changes, args.fhir_server) if rtype != "Patient")
    if untraced:
        say(err, f"{untraced} resource(s) deleted on the server name no patient without the last screen's copy "
                 "of the export: the next full screen applies them")  # fmt: skip
    wanted = touched | (bars if key is None else set())
    with err.status(f"re-reading {len(wanted)} patient(s) from the server"):
        reread = asyncio.run(reevaluate(wanted, args.fhir_server, token, catalog, as_of, s))
    reread.touched, reread.lifted = touched, wanted - touched
    return reread


def cmd_worklist(args: argparse.Namespace) -> int:
    s = get_settings()
    err = Console(stderr=True)
    within = args.within_days if args.within_days is not None else s.worklist_within_days
    if within < 0:
        say(err, "worklist: --within-days must be 0 or more")
        return 2
    try:
        wl = changes.build(RunStore(s.database_url), within, args.trial)
    except ValueError as e:
        say(err, f"worklist: {e}")
        return 2
    if wl.last is None:
        say(err, "worklist: no screen is stored yet; run `screen` first")
        return 1
    if args.format == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(changes.CSV_HEADER), lineterminator="\n")
        w.writeheader()
        w.writerows(safe_rows([e.csv() for e in wl.entries]))
        return 0
    table = Table(title=_title(wl), title_justify="left")
    for col in changes.CSV_HEADER:
        table.add_column(col)
    for e in wl.entries:
        table.add_row(*(e.csv()[c] for c in changes.CSV_HEADER))
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: no wrapped cells
    return 0


def _title(wl: changes.Worklist) -> str:
    assert wl.last is not None
    prev = f" against run {wl.previous.id} ({wl.previous.as_of})" if wl.previous else " (the first run)"
    return f"Worklist: run {wl.last.id} ({wl.last.as_of}){prev}; bars lifting within {wl.within_days} days"


def cmd_screening_log(args: argparse.Namespace) -> int:
    s = get_settings()
    err = Console(stderr=True)
    catalog = Catalog.load(s.mappings_dir, s.trials_dir, horizon_days=s.temporary_horizon_days)
    if args.trial not in catalog.trials:
        say(err, f"screening-log: unknown trial: {args.trial}")
        return 2
    if args.to < args.from_:
        say(err, "screening-log: --to is before --from")
        return 2
    try:
        months = log.build(RunStore(s.database_url), catalog.trials[args.trial], args.from_, args.to)
        paths = log.write(months, catalog.trials[args.trial], args.from_, args.to, Path(args.out))
    except OSError as e:
        say(err, f"screening-log: cannot write to {args.out} ({type(e).__name__})")
        return 2
    say(err, "wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    wl = sub.add_parser(
        "worklist",
        help="who became eligible, whose bar lifts soon, who dropped out: the store's last two screens compared",
    )
    wl.add_argument("--trial", action="append", metavar="NCT", help="only this trial (repeatable)")
    wl.add_argument("--within-days", type=int, help="bars lifting within N days (default 30)")
    wl.add_argument("--format", choices=["table", "csv"], default="table")
    wl.set_defaults(func=cmd_worklist)
    lg = sub.add_parser("screening-log", help="the sponsor's screening log of one trial: CSV and a printable page")
    lg.add_argument("--trial", required=True, metavar="NCT")
    lg.add_argument("--from", dest="from_", required=True, type=date.fromisoformat, metavar="DATE")
    lg.add_argument("--to", required=True, type=date.fromisoformat, metavar="DATE")
    lg.add_argument("--out", default=".", help="folder for screening-log.csv and screening-log.html")
    lg.set_defaults(func=cmd_screening_log)
