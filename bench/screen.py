"""Population screening throughput, as ratios measured side by side in one run.

    .venv/bin/python -m bench.screen --patients 10000 [--resources 200] [--workers 1 2] [--spark] [--sle-every 100]
    .venv/bin/python -m bench.screen --grow 10000 100000 [--resources 40] [--sle-every 100]
    .venv/bin/python -m bench.screen ... --against /tmp/before   # git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.screen ... --store   # as a coordinator runs it: the rows kept for the worklist
    .venv/bin/python -m bench.screen --export FOLDER [--workers 1 2] [--against ...]   # an existing export

Writes a synthetic Bulk Data export (N patients of about R resources each), then measures on the same
files: (a) the floor, reading and parsing every NDJSON line with orjson in one process; (b) `screen`
with each worker count (and on Spark with --spark). Prints patients/s, patients/s per core, the ratio
to the floor and peak RSS (the screen process's and its largest worker's), the speed issue's targets
(one worker within 4x the floor on an SLE cohort export, 1.5x on a clinic-like one, `--sle-every 100`;
two workers at least 1.8x one), and draws the comparison as an SVG bar chart (bench-screen.svg).
With --grow: the peaks at each export size (a worker's is bounded by a partition, so it should not grow
with the export). With --against, each worker count also runs on another checkout's code, just before
this one's, on the same files.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from bench.chart import bar_chart
from bench.patients import make_patient
from cds_service.screening.bulk import _open, export_files
from cds_service.settings import REPO_ROOT

AS_OF = date(2026, 11, 23)


def clinic_patient(resources: list[dict]) -> list[dict]:
    """The same record without SLE: its lupus diagnosis becomes essential hypertension."""
    out = []
    for r in resources:
        codes = {c.get("code") for c in r.get("code", {}).get("coding", [])} if r["resourceType"] == "Condition" else ()
        if "55464009" in codes:
            r = {**r, "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}],
                               "text": "Essential hypertension"}}  # fmt: skip
        out.append(r)
    return out


def write_export(folder: Path, patients: int, size: int, sle_every: int = 1) -> int:
    """N patients; one in `sle_every` has SLE (1: all, 100: a clinic-like export)."""
    handles: dict[str, object] = {}
    total = 0
    try:
        for i in range(patients):
            record = make_patient(size, pid=f"p{i}", as_of=AS_OF)
            for r in record if i % sle_every == 0 else clinic_patient(record):
                f = handles.get(r["resourceType"])
                if f is None:
                    f = handles[r["resourceType"]] = (folder / f"{r['resourceType']}.ndjson").open("wb")
                f.write(orjson.dumps(r) + b"\n")  # type: ignore[attr-defined]
                total += 1
    finally:
        for f in handles.values():
            f.close()  # type: ignore[attr-defined]
    return total


def floor(folder: Path) -> float:
    start = time.perf_counter()
    for _, path in export_files(folder):
        with _open(path) as f:  # gzip too
            for line in f:
                try:  # noqa: SIM105 - not contextlib.suppress: a context per line would slow the floor
                    orjson.loads(line)
                except orjson.JSONDecodeError:  # a blank or malformed line: the screen sets it aside too
                    pass
    return time.perf_counter() - start


def counted(folder: Path) -> tuple[int, int]:
    """(Patient lines, non-blank lines) of an export."""
    patients = total = 0
    for rtype, path in export_files(folder):
        with _open(path) as f:
            n = sum(1 for line in f if line.strip())
        total += n
        patients += n if rtype == "Patient" else 0
    return patients, total


CHILD = """
import json, resource, sys
from cds_service.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}), file=sys.stderr)
"""


def byte_compiled(code: Path) -> None:
    """Byte-compile a checkout's package once, as `pip install` does. Where PYTHONDONTWRITEBYTECODE is set (this
    machine; container images often set it) an uninstalled checkout is otherwise compiled from source at every
    start: 65 modules, about 0.04 s of each screen here, which no installed copy pays."""
    compileall.compile_dir(code / "cds_service", quiet=1)


def run_screen(
    folder: Path, out: Path, workers: int, spark: bool = False, code: Path = REPO_ROOT, store: bool = False
) -> tuple[float, float, float]:
    """Seconds, the screen process's peak RSS and its largest worker's (MiB) of `trial-matcher screen`,
    run in its own process, with the code of the checkout `code` (this one, or `--against`'s); with
    `store`, keeping the run for the worklist (the default of the command) in a new SQLite file in `out`."""
    start = time.perf_counter()
    cmd = [sys.executable, "-c", CHILD, "screen", str(folder), "--out", str(out), "--as-of",
           AS_OF.isoformat(), "--workers", str(workers)] + ([] if store else ["--no-store"])  # fmt: skip
    if spark:
        cmd += ["--engine", "spark", "--spark-master", f"local[{workers}]"]
    env = {**os.environ, "TRIAL_MATCHER_DATABASE_URL": f"sqlite:///{out.resolve()}/worklist.sqlite3"}
    run = subprocess.run(cmd, check=True, cwd=code, capture_output=True, text=True, env=env)  # `-c`: from cwd
    seconds = time.perf_counter() - start
    peaks = orjson.loads(run.stderr.strip().splitlines()[-1])
    return seconds, peaks["parent"], peaks["workers"]


def grow(sizes: list[int], resources: int, sle_every: int, tmp: Path) -> int:
    """Peak memory as the export grows: one worker per size; the largest worker's peak should not grow."""
    print("| patients | seconds | screen process peak MiB | largest worker peak MiB |")
    print("|---|---|---|---|")
    peaks = []
    for n in sizes:
        export = tmp / f"export-{n}"
        export.mkdir()
        write_export(export, n, resources, sle_every)
        secs, parent, worker = run_screen(export, tmp / f"out-{n}", 1)
        peaks.append(worker)
        print(f"| {n} | {secs:.1f} | {parent:.0f} | {worker:.0f} |")
        shutil.rmtree(export)
    print(f"largest worker, {sizes[-1]} against {sizes[0]} patients: {peaks[-1] / peaks[0]:.2f}x (target: within 10 %)")
    return 0


# the speed issue's targets for one worker, by the share of SLE patients a synthetic export was written with
FLOOR_TARGETS = {1: ("SLE cohort", 4.0), 100: ("clinic-like", 1.5)}
TWO_WORKERS = 1.8  # two workers against one, at least


def print_targets(seconds: dict[int, float], floor_secs: float, sle_every: int | None) -> None:
    """This checkout's runs against the issue's targets: one worker's time over the floor (for the synthetic
    exports the targets name; a site's export has none) and two workers against one."""
    print("targets")
    if 1 in seconds:
        ratio = seconds[1] / floor_secs
        kind, most = FLOOR_TARGETS.get(sle_every, (None, None))  # None: a site's export
        if most is None:
            print(f"  one worker / floor = {ratio:.1f} (no target for this export)")
        else:
            verdict = "PASS" if ratio <= most else "FAIL"
            print(f"  {kind}, one worker / floor = {ratio:.1f} (target <= {most})   {verdict}")
    if 1 in seconds and 2 in seconds:
        speedup = seconds[1] / seconds[2]
        verdict = "PASS" if speedup >= TWO_WORKERS else "FAIL"
        print(f"  two workers / one = {speedup:.2f}x (target >= {TWO_WORKERS})   {verdict}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--resources", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--spark", action="store_true", help="also the Spark engine, local[W] for the largest W")
    p.add_argument("--sle-every", type=int, default=1, help="one patient in N has SLE (100: a clinic-like export)")
    p.add_argument("--grow", type=int, nargs="+", metavar="N", help="instead: peak memory at each export size")
    p.add_argument("--against", type=Path, metavar="CHECKOUT",
                   help="also screen with another checkout's code (a git worktree of the commit before)")  # fmt: skip
    p.add_argument(
        "--store", action="store_true", help="keep each run for the worklist, as the command does by default"
    )
    p.add_argument("--export", type=Path, metavar="FOLDER",
                   help="an existing export instead of a synthetic one (a site's, or Synthea's: README)")  # fmt: skip
    args = p.parse_args()
    if args.grow:
        with tempfile.TemporaryDirectory(prefix="bench-grow-") as tmp:
            return grow(args.grow, args.resources, args.sle_every, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        if args.export:
            export, (args.patients, total) = args.export, counted(args.export)
        else:
            export = Path(tmp) / "export"
            export.mkdir()
            total = write_export(export, args.patients, args.resources, args.sle_every)
        base = min(floor(export), floor(export))  # the better of two: the screens read from the page cache too
        print(f"{args.patients} patients, {total} resources; floor (orjson, 1 process): "
              f"{args.patients / base:.0f} patients/s")  # fmt: skip
        rows = [("floor: orjson parse, 1 core", args.patients / base)]
        print("| workers | seconds | patients/s | per core | time / floor | peak RSS MiB (screen / worker) |")
        print("|---|---|---|---|---|---|")
        runs = [(w, False, REPO_ROOT) for w in args.workers] + (
            [(max(args.workers), True, REPO_ROOT)] if args.spark else []
        )
        if args.against:  # each worker count on the other checkout first, then on this one: side by side
            runs = [
                run
                for w, spark, code in runs
                for run in ([(w, spark, args.against)] if not spark else []) + [(w, spark, code)]
            ]
        for code in {code for _, _, code in runs}:
            byte_compiled(code)
        mine: dict[int, float] = {}  # this checkout's seconds by worker count (embedded engine)
        for w, spark, code in runs:
            out = Path(tmp) / f"out{w}{spark}{code.name}"
            secs, parent, worker = run_screen(export, out, w, spark, code, args.store)
            if code == REPO_ROOT and not spark:
                mine[w] = secs
            rate = args.patients / secs
            label = (f"spark local[{w}]" if spark else str(w)) + (" (against)" if code != REPO_ROOT else "")
            ratio, peaks = secs / base, f"{parent:.0f} / {worker:.0f}"
            print(f"| {label} | {secs:.1f} | {rate:.0f} | {rate / w:.0f} | {ratio:.1f} | {peaks} |")
            against = ", against" if code != REPO_ROOT else ""
            rows.append((f"screen, {'spark ' if spark else ''}{w} worker(s){against}", rate))
        print_targets(mine, base, None if args.export else args.sle_every)
        bar_chart(rows, REPO_ROOT / "bench-screen.svg", "{:.0f}/s", "Screening throughput, patients/s")
        print("chart: bench-screen.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
