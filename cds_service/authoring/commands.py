"""Authoring commands: `trial-matcher lint`, `import` and `diff`.

Exit status: 0 clean, 1 problems found, 2 a usage error (a path that does not exist, a record that is
not a ClinicalTrials.gov v2 study). Input errors are one line naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

from cds_service.authoring.bullets import bullet_changes, bullets_of
from cds_service.authoring.ctgov import import_record
from cds_service.authoring.lint import lint_file, lint_paths
from cds_service.authoring.sources import record_text, source_path, source_text, unquoted
from cds_service.fhir.mappings import load_mappings
from cds_service.settings import get_settings

EXIT_CLEAN, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
# What a hostile or broken input file can raise while it is read and imported: said in one line, exit 2.
INPUT_ERRORS = (OSError, ValueError, RecursionError, TypeError, AttributeError, KeyError)


def cmd_lint(args: argparse.Namespace) -> int:
    s = get_settings()
    paths = [Path(p) for p in args.paths] or [s.trials_dir]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"lint: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return EXIT_USAGE
    problems = lint_paths(paths, load_mappings(s.mappings_dir))
    for p in problems:
        print(p)
    errors = sum(p.is_error for p in problems)
    warned = f"{len(problems) - errors} warning(s)" if len(problems) > errors else ""
    if errors:
        print(f"{errors} problem(s)" + (f", {warned}" if warned else ""), file=sys.stderr)
    else:
        print("lint: clean" + (f", {warned}" if warned else ""), file=sys.stderr)
    return EXIT_PROBLEMS if errors else EXIT_CLEAN


NCT_ID = re.compile(r"NCT\d{8}")
NOT_A_RECORD = (  # a saved registry page (.txt) is what people have at hand; say what import takes instead
    "not a JSON study record: import takes a study's ClinicalTrials.gov API v2 JSON (/api/v2/studies/NCT...); "
    "a saved registry page is a trial's source for lint and diff"
)


def cmd_import(args: argparse.Namespace) -> int:
    s = get_settings()
    try:
        raw = Path(args.record).read_text(encoding="utf-8-sig")  # a byte-order mark is not the record
        if not raw.lstrip().startswith("{"):
            raise ValueError(NOT_A_RECORD)
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("a study record is a JSON object")
        data = import_record(record, load_mappings(s.mappings_dir))
    except INPUT_ERRORS as e:
        print(f"import: cannot import {args.record}: {_reason(e)}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else s.trials_dir / f"{data['id']}.yaml"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "sources").mkdir(exist_ok=True)
        shutil.copyfile(args.record, out.parent / "sources" / f"{data['id']}.json")  # the quotes' source, beside
        header = (
            f"# Imported from the ClinicalTrials.gov record {data['id']}: a draft, never evaluated. Encode each\n"
            "# criterion, remove `draft: true`, then lint.\n"
        )
        out.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    except OSError as e:
        print(f"import: cannot write {out} ({type(e).__name__})", file=sys.stderr)
        return EXIT_USAGE
    print(f"import: wrote {out} ({len(data['criteria'])} criteria) and its source", file=sys.stderr)
    if "entry" in data:
        print(f"import: cohort entry proposed: {data['entry']['groups']} (check it)", file=sys.stderr)
    else:
        print("import: no cohort entry found: add `entry:` naming the disease studied", file=sys.stderr)
    return cmd_lint(argparse.Namespace(paths=[str(out)]))


def cmd_diff(args: argparse.Namespace) -> int:
    """Criteria whose quoted text is no longer in a newer registry record (or page) of the trial, and the
    bullets added, changed or removed between the kept source and the newer one."""
    s = get_settings()
    path = s.trials_dir / f"{args.trial}.yaml"
    if not path.is_file():
        print(f"diff: no trial file {path}", file=sys.stderr)
        return EXIT_USAGE
    trial, problems = lint_file(path, load_mappings(s.mappings_dir), check_source=False)
    if trial is None:
        for p in problems:
            print(p)
        return EXIT_PROBLEMS
    newer = Path(args.against) if args.against else None
    if newer is not None and not newer.is_file():
        print(f"diff: no such file {newer}", file=sys.stderr)
        return EXIT_USAGE
    try:
        text, names = _text(newer) if newer else (source_text(s.trials_dir, trial.id), set())
    except INPUT_ERRORS as e:
        print(f"diff: cannot read {newer or 'the kept source'}: {_reason(e)}", file=sys.stderr)
        return EXIT_USAGE
    if names and trial.id not in names:  # another trial's record: every criterion would read as changed
        print(f"diff: {newer} is the registry record of {', '.join(sorted(names))}, not {trial.id}", file=sys.stderr)
        return EXIT_USAGE
    changed = unquoted(trial, text or "")
    for cid, fragment in changed:
        print(f"{trial.id} criterion {cid}: no longer in the registry text: {fragment[:100]!r}")
    kept = source_path(s.trials_dir, trial.id)
    bullets = bullet_changes(bullets_of(kept), bullets_of(newer)) if kept and newer else []
    for change in bullets:  # a bullet deleted or added changes who is eligible, whatever the quotes say
        print(f"{trial.id} {change}")
    return EXIT_PROBLEMS if changed or bullets else EXIT_CLEAN


def _reason(e: BaseException) -> str:
    """One line on why an input could not be used: our own ValueErrors and JSON's position messages are
    said as they are; anything else by its type (its message could quote the input at length)."""
    if type(e) in (ValueError, json.JSONDecodeError) or isinstance(e, UnicodeDecodeError):
        return " ".join(str(e).split())[:200]
    if isinstance(e, RecursionError):
        return "nested too deeply to read"
    if isinstance(e, OSError):
        return f"cannot be read ({type(e).__name__})"
    return f"not a ClinicalTrials.gov API v2 study record ({type(e).__name__})"


def _text(path: Path) -> tuple[str, set[str]]:
    """The criteria text of a record (API v2 JSON) or a saved registry page, and the NCT id it is the record
    of: the record's nctId, or the first a page names (every registry page saved here names its own first)."""
    raw = path.read_text(encoding="utf-8-sig")  # a byte-order mark some editors write is not the text
    if path.suffix != ".json":
        own = NCT_ID.search(raw)  # a saved page names its own id at its head, above any trial its text cites
        return raw, {own.group()} if own else set()
    record = json.loads(raw)
    ident = record.get("protocolSection", {}).get("identificationModule", {}) if isinstance(record, dict) else {}
    nct = ident.get("nctId") if isinstance(ident, dict) else None
    return record_text(record), ({nct} if isinstance(nct, str) and NCT_ID.fullmatch(nct) else set())


def add_commands(sub: argparse._SubParsersAction) -> None:
    lint = sub.add_parser(
        "lint",
        help="check trial files: FILE:LINE: TRIAL criterion ID: message, with the fix",
        description="Exit status: 0 clean, 1 problems, 2 usage error.",
    )
    lint.add_argument("paths", nargs="*", help="trial files or folders (default: the configured trials folder)")
    lint.set_defaults(func=cmd_lint)
    imp = sub.add_parser(
        "import",
        help="make a trial file from a ClinicalTrials.gov API v2 study record (JSON)",
        description="Writes the trial YAML (every criterion quoted, marked review) and keeps the record in "
        "trials/sources/ beside it; then lints the result.",
    )
    imp.add_argument("record", help="path to the study record JSON")
    imp.add_argument("--out", help="where to write the YAML (default: TRIALS_DIR/NCT....yaml)")
    imp.set_defaults(func=cmd_import)
    diff = sub.add_parser(
        "diff",
        help="list criteria whose registry text changed, and bullets added, changed or removed, since encoding",
    )
    diff.add_argument("trial", help="NCT id of a trial in the trials folder")
    diff.add_argument(
        "--against", help="a newer registry record (.json, API v2) or page (.txt); default: the kept source"
    )
    diff.set_defaults(func=cmd_diff)
