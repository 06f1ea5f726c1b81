"""Where the time of one patient goes: normalising FHIR into facts, and evaluating every trial.

    .venv/bin/python -m bench.profile [--patients 200] [--resources 200] [--out bench/profile.md] [--replace]
    .venv/bin/python -m bench.profile --against /tmp/before   # git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.profile --export /tmp/sle5k [--patients 1000]   # a screen's stages, on an export

Times the two stages per patient (best CPU time and median wall time of nine passes over the same bench
patients, one core) and profiles both with cProfile; writes the figures and the functions with the most own
time as Markdown (bench/profile.md is the committed artefact: each run is written above the earlier ones,
which stay as the history; --replace writes it alone). With --against, the same measurement of another
checkout's code runs first, in its own process, and its figures head the page beside these.

With --export, the stages of a screen instead, on the first patients of a Bulk Data export (the speed issue's
SLE cohort export: `bench.screen --patients 5000 --resources 40` writes one): the orjson floor of their lines,
reading them as the screen does (parse, owner, grouping), normalising, the verdicts and the rows, each as a
multiple of the floor, so that what a one-worker screen costs beyond parsing is seen stage by stage.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from bench.patients import make_patient
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.normalize import SharedMedications
from cds_service.runtime import collector_paused
from cds_service.screening.bulk import _open, _parsed, export_files
from cds_service.screening.funnel import Funnel, row
from cds_service.settings import REPO_ROOT

AS_OF = date(2026, 11, 23)


def timed(catalog: Catalog, patients: list[list[dict]], passes: int = 9) -> dict[str, tuple[float, float]]:
    """Per stage, (best CPU ms, median wall ms) per patient over `passes` passes. On a shared virtual
    machine the wall clock counts time the core was lent to a neighbour (figures moved 2x within an hour
    here); the CPU time of this thread does not, so its best pass is what two commits are compared by.
    `verdicts` (a screen's evaluation, without explanations) only where the code has it."""
    stages = {"normalise": None, "evaluate": catalog.report, "verdicts": getattr(catalog, "verdicts", None)}
    cpu: dict[str, list[float]] = {k: [] for k, f in stages.items() if f is not None or k == "normalise"}
    wall: dict[str, list[float]] = {k: [] for k in cpu}
    per = 1000 / len(patients)
    for _ in range(passes):
        c0, w0 = time.thread_time(), time.perf_counter()
        facts = [catalog.facts(p, f"b{i}") for i, p in enumerate(patients)]
        cpu["normalise"].append((time.thread_time() - c0) * per)
        wall["normalise"].append((time.perf_counter() - w0) * per)
        for stage in list(cpu)[1:]:
            evaluate = stages[stage]
            assert evaluate is not None
            c0, w0 = time.thread_time(), time.perf_counter()
            for f in facts:
                evaluate(f, AS_OF)
            cpu[stage].append((time.thread_time() - c0) * per)
            wall[stage].append((time.perf_counter() - w0) * per)
    return {k: (min(cpu[k]), statistics.median(wall[k])) for k in cpu}


LABELS = {
    "normalise": "normalise (FHIR to facts)",
    "evaluate": "evaluate (every criterion of every trial, explained: the hook, /match)",
    "verdicts": "verdicts (the same decisions without explanations: a screen)",
}


def top(catalog: Catalog, patients: list[list[dict]], n: int = 20) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for i, p in enumerate(patients):
        catalog.report(catalog.facts(p, f"b{i}"), AS_OF)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime")
    rows = ["| own s | total s | calls | function |", "|---|---|---|---|"]
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:n]:  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line} {fn}" if file != "~" else fn
        rows.append(f"| {tt:.3f} | {ct:.3f} | {nc} | `{where}` |")
    return "\n".join(rows)


def export_lines(folder: Path, patients: int) -> list[bytes]:
    """The NDJSON lines of the export's first `patients` patients (by the Patient file's order)."""
    files = export_files(folder)
    keep: set[str] = set()
    lines: list[bytes] = []
    for kind, path in sorted(files, key=lambda f: f[0] != "Patient"):  # the Patients first: they choose
        with _open(path) as f:
            for line in f:
                _, pid, res = _parsed(line)
                if kind == "Patient" and len(keep) < patients and pid is not None:
                    keep.add(pid)
                if pid in keep or (res is not None and res.get("resourceType") == "Medication"):
                    lines.append(line)
    return lines


def floor(lines: list[bytes]) -> None:
    """Each line parsed and let go, as bench.screen's floor does."""
    for line in lines:
        orjson.loads(line)


def screen_stages(catalog: Catalog, lines: list[bytes], passes: int = 3) -> dict[str, float]:
    """Per stage of a screen, the best CPU ms of `passes` over the same lines, per patient; the collector
    paused, as a screen's worker pauses it for a partition (runtime.collector_paused)."""
    best: dict[str, float] = {}

    def timed_stage(name: str, work):  # type: ignore[no-untyped-def]
        c0 = time.thread_time()
        out = work()
        best[name] = min(best.get(name, float("inf")), time.thread_time() - c0)
        return out

    def grouped() -> tuple[dict[str, list[dict]], SharedMedications]:
        """Each patient's resources, and the Medications they share, indexed once as a worker indexes them."""
        by: dict[str, list[dict]] = {}
        shared: list[dict] = []
        for line in lines:
            kind, pid, res = _parsed(line)
            if pid is not None and res is not None:
                by.setdefault(pid, []).append(res)
            elif kind == "medication" and res is not None:
                shared.append(res)
        return by, catalog.normalizer.shared_medications(shared)

    def rows(verdicts: dict[str, list]) -> None:
        funnel = Funnel()
        for pid, results in verdicts.items():
            for r in results:
                row(pid, r)
                funnel.add(r)

    for _ in range(passes):
        timed_stage("floor", lambda: floor(lines))
        by, shared = timed_stage("read", grouped)
        facts = timed_stage("normalise", lambda: {p: catalog.facts(r, p, shared=shared) for p, r in by.items()})  # noqa: B023
        verdicts = timed_stage("verdicts", lambda: {pid: catalog.verdicts(f, AS_OF) for pid, f in facts.items()})  # noqa: B023
        timed_stage("rows", lambda: rows(verdicts))  # noqa: B023
    return {k: v * 1000 / max(len(by), 1) for k, v in best.items()}


SCREEN_LABELS = {
    "floor": "the floor: orjson parse of the patient's lines",
    "read": "read: parse, owner, grouped by patient (bulk.py)",
    "normalise": "normalise (FHIR to facts)",
    "verdicts": "verdicts (every criterion of every trial)",
    "rows": "rows and funnel counts",
}


def screen_profile(folder: Path, patients: int) -> str:
    catalog = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials")
    lines = export_lines(folder, patients)
    with collector_paused():
        t = screen_stages(catalog, lines)
    parse = max(t["floor"], 1e-9)  # a clock too coarse for a tiny export
    stages = "".join(f"| {SCREEN_LABELS[k]} | {ms:.3f} | {ms / parse:.1f} |\n" for k, ms in t.items())
    beyond = sum(ms for k, ms in t.items() if k != "floor")
    return (
        f"# A screen's stages on an export ({folder.name}), commit {commit(REPO_ROOT)}, {date.today()}\n\n"
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, one core; its first "
        f"{patients} patients ({len(lines)} lines), {len(catalog.trials)} trials.\n\n"
        "| stage | ms per patient, best CPU time of 3 passes | x the floor |\n|---|---|---|\n"
        + stages
        + f"\nRead to rows: {beyond:.3f} ms per patient, {beyond / parse:.1f} x the floor (the process's start, "
        "the partition step and the outputs come on top: bench.screen measures the whole).\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--resources", type=int, default=200)
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "profile.md"))
    p.add_argument("--against", type=Path, metavar="CHECKOUT", help="also measure another checkout's code")
    p.add_argument("--replace", action="store_true", help="write only this profile (default: above those in OUT)")
    p.add_argument("--export", type=Path, metavar="FOLDER", help="a screen's stages on this Bulk Data export")
    args = p.parse_args(argv)
    if args.export:
        text = screen_profile(args.export, args.patients)
        write_first(Path(args.out), text, args.replace)
        print(text)
        return 0
    before = against(args.against, args.patients, args.resources) if args.against else ""
    catalog = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials")
    patients = [make_patient(args.resources, f"b{i}", AS_OF) for i in range(args.patients)]
    t = timed(catalog, patients)
    text = (
        f"# Profile of one patient ({args.resources} resources), commit {commit(REPO_ROOT)}, {date.today()}\n\n"
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, one core; "
        f"{args.patients} bench patients (bench/patients.py), {len(catalog.trials)} trials.\n\n"
        + (f"{before}\n" if before else "")
        + "| stage | ms per patient, best CPU time of 9 passes | median wall time |\n|---|---|---|\n"
        + "".join(f"| {LABELS[k]} | {cpu:.2f} | {wall:.2f} |\n" for k, (cpu, wall) in t.items())
        + f"\nFunctions with the most own time (cProfile, both stages):\n\n{top(catalog, patients)}\n"
    )
    write_first(Path(args.out), text, args.replace)
    print(text)
    return 0


def write_first(path: Path, text: str, replace: bool = False) -> None:
    """`text` at the head of `path`, the profiles already there kept below it (the committed artefact is the
    history of each measurement, newest first); only `text` with `replace`, or for a new file."""
    kept = "" if replace or not path.exists() else "\n" + path.read_text(encoding="utf-8")
    path.write_text(text + kept, encoding="utf-8")


def commit(checkout: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()


def against(checkout: Path, patients: int, resources: int) -> str:
    """The stage table of the same measurement with `checkout`'s code (this script run there)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.md"
        argv = ["--patients", str(patients), "--resources", str(resources), "--out", str(out)]
        code = (
            f"import runpy, sys; sys.path.insert(0, {str(checkout)!r}); sys.argv = ['profile', *{argv!r}]; "
            f"runpy.run_path({__file__!r}, run_name='__main__')"
        )
        subprocess.run([sys.executable, "-c", code], cwd=checkout, check=True, capture_output=True)
        lines = out.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| stage"))
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i].startswith("|"))
    table = "\n".join(lines[start:end])  # header, rule, a row per stage
    return f"Against commit {commit(checkout)}, measured just before, in the same way:\n\n{table}\n\nThis commit:\n"


if __name__ == "__main__":
    sys.exit(main())
