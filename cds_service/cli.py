"""Command line: `trial-matcher evaluate|trials|coverage|serve|lint|import|diff|screen|worklist|screening-log`
(also `python -m cds_service`).

`evaluate` exits 0 when at least one trial is likely or possibly eligible, 1 when none is,
and 2 on a usage or input error, so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cds_service.eligibility.catalog import Catalog, MixedPatients
from cds_service.eligibility.coverage import catalog_entry, coverage, render_text
from cds_service.eligibility.report import Report, TrialResult
from cds_service.interrupts import command_ends_the_process
from cds_service.logs import server_log_config
from cds_service.settings import get_settings, settings_errors

OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "unknown": "yellow", "review": "cyan"}
STATUS_STYLE = {
    "likely-eligible": "bold green",
    "possibly-eligible": "bold yellow",
    "ineligible": "bold red",
    "not-assessed": "dim",
    "draft": "dim italic",  # imported, not yet encoded: never evaluated
}
EXIT_MATCH, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2
# The other areas' commands, by the module that adds them (its `add_commands`): imported only when one of its
# commands is run, or for the full --help. `screen` of a folder so never imports the authoring tools, the
# worklist's store or the HTTP client: 0.42 -> 0.31 s of its imports on this machine (README, Start-up).
AREAS = {
    "cds_service.authoring.commands": ("lint", "import", "diff"),
    "cds_service.screening.command": ("screen",),
    "cds_service.worklist.command": ("worklist", "screening-log"),
}


def _catalog() -> Catalog:
    s = get_settings()
    return Catalog.load(s.mappings_dir, s.trials_dir, s.strict_validation, s.temporary_horizon_days)


def _evidence_text(c) -> str:
    parts = []
    for e in c.evidence[:3]:
        value = f"{e.value:g}" if isinstance(e.value, float) else (str(e.value) if e.value is not None else "")
        unit = f" {e.unit}" if e.unit else ""
        orig = f" ({e.original_value} {e.original_unit})" if e.original_unit and e.original_unit != e.unit else ""
        said = f"{value}{unit}{orig}"
        day = e.date.isoformat() if e.date else ""
        if said:
            parts.append(f"{e.label}: {said}{', ' + day if day else ''}")
        else:  # a diagnosis or a drug on record: its date, no value
            parts.append(f"{e.label} ({day})" if day else e.label)
    return "\n".join(parts)


def trial_table(trial: TrialResult) -> Table:
    title = Text.assemble((f"{trial.id} ", "bold"), (trial.status, STATUS_STYLE[trial.status]))
    if trial.eligible_from:
        title.append(f" from {trial.eligible_from.isoformat()}", style="bold yellow")
    if trial.status == "draft":
        title.append(": not yet encoded, never evaluated")
    if trial.cohort is not None and trial.cohort.outcome != "in":
        title.append(f": {trial.cohort.reason}")  # outside the cohort no criterion is read
    table = Table(title=title, title_justify="left", show_lines=True, expand=True)
    table.add_column("criterion", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("text", ratio=3)
    table.add_column("why / evidence / missing", ratio=3)
    for c in trial.criteria:
        detail = [x for x in (c.explanation, _evidence_text(c)) if x]
        detail += [f"missing: {m}" for m in c.missing] + [f"review: {r}" for r in c.review]
        if c.until:
            detail.append(f"until {c.until.isoformat()}")
        text = c.text if len(c.text) <= 220 else c.text[:219] + "…"
        table.add_row(f"{c.type[:3]} {c.id}", Text(c.outcome, style=OUTCOME_STYLE[c.outcome]), text, "\n".join(detail))
    return table


def cmd_evaluate(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        data = json.loads(Path(args.bundle).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        err.print(f"[red]cannot read {args.bundle}: {type(e).__name__}[/red]")
        return EXIT_ERROR
    cat = _catalog()
    unknown = [t for t in args.trial or [] if t not in cat.trials]
    if cat.problems:  # a trial file that does not pass lint: say what to fix, not a traceback
        for problem in cat.problems:
            err.print(str(problem), markup=False)
        if not args.trial or unknown:
            return EXIT_ERROR  # the whole catalogue, or a trial that may be the file left out: not a partial answer
        err.print("[yellow]the file(s) above were left out; the trial(s) asked for loaded and are evaluated[/yellow]")
    if unknown:
        err.print(f"[red]unknown trial(s): {', '.join(unknown)}[/red]; see `trial-matcher trials`")
        return EXIT_ERROR
    try:
        facts = cat.facts(data)
    except MixedPatients as e:
        err.print(f"[red]{e}[/red]")
        return EXIT_ERROR
    if facts.patient == "Patient/unknown":
        err.print("[red]the file holds no Patient resource[/red]")
        return EXIT_ERROR
    report: Report = cat.report(facts, args.as_of or date.today(), args.trial)
    if args.format == "json":
        print(report.model_dump_json(indent=2, exclude_none=True))
    else:
        out = Console(force_terminal=args.color, no_color=args.no_color)
        out.print(f"[bold]{report.patient}[/bold] evaluated on {report.as_of.isoformat()}")
        for t in report.trials:
            out.print(trial_table(t))
        summary = Table(title="summary", title_justify="left")
        for col in ("trial", "status", "pass", "fail", "unknown", "review"):
            summary.add_column(col)
        for t in report.trials:
            summary.add_row(
                t.id,
                Text(t.status + (f" from {t.eligible_from}" if t.eligible_from else ""), style=STATUS_STYLE[t.status]),
                *(str(t.count(o)) for o in ("pass", "fail", "unknown", "review")),
            )
        out.print(summary)
        if report.skipped_resources:
            out.print(f"[yellow]skipped: {'; '.join(report.skipped_resources)}[/yellow]")
    matched = any(t.status in ("likely-eligible", "possibly-eligible") for t in report.trials)
    return EXIT_MATCH if matched else EXIT_NO_MATCH


def cmd_trials(args: argparse.Namespace) -> int:
    cat = _catalog()
    if args.format == "json":
        print(json.dumps([catalog_entry(t) for t in cat.trials.values()], indent=2))
        return 0
    table = Table(title="trial catalogue", title_justify="left")
    for col in ("id", "title", "sponsor", "phase", "status", "ages", "criteria"):
        table.add_column(col)
    for e in (catalog_entry(t) for t in cat.trials.values()):
        ages = f"{e['min_age'] or ''}-{e['max_age'] or ''}"
        table.add_row(
            str(e["id"]),
            str(e["short_title"] or e["title"]),
            str(e["sponsor"]),
            str(e["phase"]),
            str(e["status"]),
            ages,
            str(e["criteria"]),
        )
    Console().print(table)
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    cat = _catalog()
    rows = [coverage(t) for t in cat.trials.values()]
    if args.format == "json":
        print(json.dumps([asdict(r) | {"total": r.total} for r in rows], indent=2))
    else:
        print(render_text(rows))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    s = get_settings()
    problem = s.serve_problem()  # before uvicorn, which would print the app factory's error as a traceback
    if problem:
        print(f"serve: {problem}", file=sys.stderr)
        return EXIT_ERROR
    uvicorn.run(
        "cds_service.api.app:create_app",
        factory=True,
        host=args.host or s.host,
        port=args.port or s.port,
        workers=args.workers,
        log_level=s.log_level.lower(),
        log_config=server_log_config(s.log_level),  # JSON lines, as the app's own
        access_log=False,  # the app logs requests itself, without query strings
        ws="none",  # no WebSocket route: an upgrade is plain HTTP (the websockets library logs each header)
    )
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with `argv`, only the area of the command it names (all when it names none)."""
    p = argparse.ArgumentParser(prog="trial-matcher", description="Clinical trial matching from FHIR R4 data")
    sub = p.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate one patient's FHIR Bundle against the trials",
        description="Evaluate a FHIR R4 Bundle (or resource list) of one patient. Exit status: "
        "0 if any trial is likely or possibly eligible, 1 if none, 2 on error.",
    )
    ev.add_argument("bundle", help="path to a JSON file: a Bundle, a resource, or a list of resources")
    ev.add_argument("--trial", action="append", metavar="NCT", help="only this trial (repeatable)")
    ev.add_argument("--as-of", type=date.fromisoformat, metavar="DATE", help="evaluation date (default today)")
    ev.add_argument("--format", choices=["table", "json"], default="table")
    ev.add_argument("--color", action="store_true", default=None, help="force colour even when not a terminal")
    ev.add_argument("--no-color", action="store_true", help="no colour")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("trials", help="list the trial catalogue")
    tr.add_argument("--format", choices=["table", "json"], default="table")
    tr.set_defaults(func=cmd_trials)

    c = sub.add_parser("coverage", help="per-trial criteria coverage: total, computable, review, variables used")
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.set_defaults(func=cmd_coverage)

    sv = sub.add_parser("serve", help="run the CDS Hooks service (settings from TRIAL_MATCHER_* variables)")
    sv.add_argument("--host", help="bind address (default TRIAL_MATCHER_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default TRIAL_MATCHER_PORT or 8000)")
    sv.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (one per core pays)")
    sv.set_defaults(func=cmd_serve)
    named = argv[0] if argv and not argv[0].startswith("-") else None  # the command; None: --help, -h screen, --
    known = set(sub.choices).union(*AREAS.values())  # the commands above, and the areas'
    for module, commands in AREAS.items():
        if argv is None or named not in known or named in commands:  # a typo is answered with every command
            importlib.import_module(module).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line. Without `argv` it is the process's own command (the console script, `python -m`),
    which ends when this returns (interrupts.command_ends_the_process)."""
    if argv is None:
        command_ends_the_process()
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except ValidationError as e:  # a TRIAL_MATCHER_* variable that does not parse: named, in one line each
        errors = settings_errors(e)
        if errors is None:
            raise
        print("\n".join(f"{args.command}: setting {line}" for line in errors), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `trial-matcher coverage | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
