"""How large a real-shaped patient-view request gets: the body-size cap (TRIAL_MATCHER_MAX_BODY_BYTES) is
set from this, not guessed.

    .venv/bin/python -m bench.bodies [--patients 200] [--seed 3]

Generates Synthea 3.3.0 patients aged 25-60 (lifetime histories, verbose EHR-like resources: every
Observation carries its category, units, interpretation and encounter), builds the hook request an
EHR would send for our prefetch templates (every key, each a searchset Bundle), and prints the body
sizes: median, 95th and 99th percentile, the largest, and the resources behind the largest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from demo import synthea
from demo.hook_request import prefetch_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    sizes: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
        for path in synthea.generate(args.patients, args.seed, Path(tmp), sle_care=False):
            bundle = json.loads(path.read_text())
            res = [e["resource"] for e in bundle.get("entry", [])]
            patient = next((r for r in res if r["resourceType"] == "Patient"), None)
            if patient is None:
                continue
            for r in res:  # transaction Bundles reference the patient by urn:uuid; a FHIR server says Patient/id
                for key in ("subject", "patient"):
                    if isinstance(r.get(key), dict):
                        r[key] = {"reference": f"Patient/{patient['id']}"}
            body = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": patient["id"]},
                    "prefetch": prefetch_for(res, patient["id"])}  # fmt: skip
            sizes.append((len(json.dumps(body, separators=(",", ":"))), len(res)))
    sizes.sort()
    body = [s for s, _ in sizes]
    mib = 1024 * 1024
    print(f"{len(sizes)} Synthea patients; patient-view bodies with every prefetch key:")
    print(f"median {statistics.median(body) / mib:.2f} MiB, p95 {body[int(0.95 * (len(body) - 1))] / mib:.2f} MiB, "
          f"p99 {body[int(0.99 * (len(body) - 1))] / mib:.2f} MiB, largest {body[-1] / mib:.2f} MiB "
          f"({sizes[-1][1]} resources in the record)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
