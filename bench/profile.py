"""Where the time of one patient goes: normalising FHIR into facts, and evaluating every trial.

    .venv/bin/python -m bench.profile [--patients 200] [--resources 200] [--out bench/profile.md]

Times the two stages per patient (median of three passes over the same bench patients, one core) and
profiles both with cProfile; writes the figures and the functions with the most own time as Markdown
(bench/profile.md is the committed artefact; run it on two commits to compare).
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
import time
from datetime import date
from pathlib import Path

from bench.patients import make_patient
from cds_service.eligibility.catalog import Catalog
from cds_service.settings import REPO_ROOT

AS_OF = date(2026, 11, 23)


def timed(catalog: Catalog, patients: list[list[dict]]) -> tuple[float, float]:
    """(normalise, evaluate) milliseconds per patient, the median of three passes."""
    norm, ev = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        facts = [catalog.facts(p, f"b{i}") for i, p in enumerate(patients)]
        t1 = time.perf_counter()
        for f in facts:
            catalog.report(f, AS_OF)
        t2 = time.perf_counter()
        norm.append((t1 - t0) / len(patients) * 1000)
        ev.append((t2 - t1) / len(patients) * 1000)
    return statistics.median(norm), statistics.median(ev)


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--resources", type=int, default=200)
    p.add_argument("--out", default=str(REPO_ROOT / "bench" / "profile.md"))
    args = p.parse_args(argv)
    catalog = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials")
    patients = [make_patient(args.resources, f"b{i}", AS_OF) for i in range(args.patients)]
    norm, ev = timed(catalog, patients)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    text = (
        f"# Profile of one patient ({args.resources} resources), commit {commit}, {date.today()}\n\n"
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, one core; "
        f"{args.patients} bench patients (bench/patients.py), {len(catalog.trials)} trials.\n\n"
        f"| stage | ms per patient |\n|---|---|\n| normalise (FHIR to facts) | {norm:.2f} |\n"
        f"| evaluate (every criterion of every trial) | {ev:.2f} |\n\n"
        f"Functions with the most own time (cProfile, both stages):\n\n{top(catalog, patients)}\n"
    )
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
