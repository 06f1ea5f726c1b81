"""Re-screening what changed (`screen --since last`) against a full screen, side by side in one run.

    .venv/bin/python -m bench.rescreen [--patients 1000] [--changed 10] [--fhir-base URL]

Loads N bench patients (bench/patients.py mix, about 40 resources each) into HAPI FHIR JPA (started on
a free port unless --fhir-base names one), runs a full `screen --fhir-server` (stored), changes K of
them (a new Observation each), and runs `screen --since last`. Prints both runs' wall time, split into
the server's `$export` and our evaluation, and the ratios; draws bench-rescreen.svg. The export's
fixed cost (kick-off, polls: HAPI's batch job runs every 2 s here) does not shrink with the change, so
the evaluation ratio is the one that says what `--since last` saves us.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

from bench.chart import bar_chart
from bench.hapi import load
from bench.patients import make_patient
from bench.service import free_port
from cds_service.settings import REPO_ROOT
from demo import synthetic as syn

AS_OF = date(2026, 11, 23)


def cli(env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cds_service", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return time.perf_counter() - start, " ".join(done.stderr.split())  # wrapped lines joined


def measure(base: str, work: Path, patients: int, changed: int) -> dict[str, float]:
    tag = f"rs{int(time.time())}"
    load(base, [make_patient(40, f"{tag}-{i}", AS_OF) for i in range(patients)])
    env = {**os.environ, "TRIAL_MATCHER_DATABASE_URL": f"sqlite:///{work / 'store.sqlite3'}"}
    common = ["--fhir-server", base, "--workers", "1", "--max-poll-seconds", "2"]
    full, err = cli(env, "screen", *common, "--out", str(work / "full"), "--as-of", AS_OF.isoformat())
    full_eval = float(re.search(r"resources in ([\d.]+) s", err).group(1))  # type: ignore[union-attr]
    later = AS_OF + timedelta(days=1)
    for i in range(changed):
        pid = f"{tag}-{i}"
        load(base, [[syn.quantity(pid, "718-7", 12.5, "g/dL", later, display="Hemoglobin")]])
    since, err = cli(env, "screen", *common, "--since", "last", "--out", str(work / "since"), "--as-of",
                     later.isoformat())  # fmt: skip
    found = re.search(r"\$export ([\d.]+) s, re-read and evaluated in ([\d.]+) s", err)
    assert found, err[-500:]
    return {"full_s": full, "full_eval_s": full_eval, "since_s": since, "since_export_s": float(found.group(1)),
            "since_eval_s": float(found.group(2))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--changed", type=int, default=10)
    p.add_argument("--fhir-base", help="a running HAPI server's base URL (default: start one)")
    args = p.parse_args(argv)
    port, base = None, args.fhir_base
    if not base:
        port = free_port()
        subprocess.run([str(REPO_ROOT / "scripts" / "hapi-fhir.sh"), "start", str(port)], check=True, timeout=900)
        base = f"http://127.0.0.1:{port}/fhir"
    try:
        httpx.get(f"{base}/metadata", timeout=60).raise_for_status()
        with tempfile.TemporaryDirectory(prefix="bench-rescreen-") as tmp:
            m = measure(base.rstrip("/"), Path(tmp), args.patients, args.changed)
    finally:
        if port:
            subprocess.run([str(REPO_ROOT / "scripts" / "hapi-fhir.sh"), "stop", str(port)], timeout=60)
    print(f"{args.patients} patients, {args.changed} changed, on {os.cpu_count()} cores, {date.today()}")
    print(f"full screen: {m['full_s']:.1f} s ({m['full_eval_s']:.1f} s evaluating)")
    print(f"--since last: {m['since_s']:.1f} s ($export {m['since_export_s']:.1f} s, re-read and evaluated "
          f"{m['since_eval_s']:.1f} s)")  # fmt: skip
    print(f"ratio, whole run: {m['since_s'] / m['full_s']:.3f}; evaluation: {m['since_eval_s'] / m['full_eval_s']:.3f}")
    rows = [
        ("full screen, whole run (s)", m["full_s"]),
        ("full screen, evaluation (s)", m["full_eval_s"]),
        ("--since last, whole run (s)", m["since_s"]),
        ("--since last, re-read + evaluation (s)", m["since_eval_s"]),
    ]
    bar_chart(rows, Path("bench-rescreen.svg"), "{:.1f}", f"Re-screening {args.changed} of {args.patients} patients")
    return 0


if __name__ == "__main__":
    sys.exit(main())
