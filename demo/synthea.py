"""Synthea lupus patients: seeded, reproducible FHIR R4 transaction Bundles and Bulk Data NDJSON.

    python -m demo.synthea --patients 10 --seed 7 --out var/synthea
    python -m demo.synthea --patients 10 --seed 7 --out var/synthea --load http://127.0.0.1:8080/fhir
    python -m demo.synthea --patients 300 --seed 11 --out var/general --general   # no SLE module

Runs Synthea 3.3.0 (Maven Central, fetched once into tools/synthea/target/lib; offline after that)
with every one of its modules plus ours (tools/synthea/modules/sle_care.json: SLE care with labs
and lupus drugs), adults 25-60, alive, dated up to the reference date (default today). The same seed
and reference date give the same patients. Writes:

  OUT/bundles/*.json    Synthea's transaction Bundles: the hospital and practitioner Bundles, then
                        one per patient (load them in that order: patients refer to practitioners)
  OUT/ndjson/*.ndjson   the same patients as Bulk Data NDJSON, one file per resource type, with
                        references rewritten from urn:uuid to Type/id (`trial-matcher screen` reads it)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "synthea"
LIB = TOOL / "target" / "lib"


def ensure_synthea() -> Path:
    """Synthea's jars in tools/synthea/target/lib (Maven, once; about 200 MB)."""
    if not (LIB / "synthea-3.3.0.jar").exists():
        if not (shutil.which("mvn") and shutil.which("java")):
            raise SystemExit("synthea: Java 17+ and Maven are needed")
        pom = str(TOOL / "pom.xml")
        cmd = ["mvn", "-q", "-B", "-f", pom, "dependency:copy-dependencies", f"-DoutputDirectory={LIB}"]
        subprocess.run(cmd, check=True)
    return LIB


def generate(patients: int, seed: int, out: Path, reference: date | None = None, sle_care: bool = True) -> list[Path]:
    """Run Synthea; return the patient Bundles (hospital and practitioner Bundles are written too).
    `sle_care=False`: Synthea's own modules only, a general population (few or none with SLE)."""
    lib = ensure_synthea()
    reference = reference or date.today()
    bundles = out / "bundles"
    shutil.rmtree(bundles, ignore_errors=True)
    bundles.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="synthea-") as tmp:
        cmd = ["java", "-Xmx2g", "-cp", f"{lib}/*", "App", "-s", str(seed), "-cs", str(seed), "-p", str(patients),
               "-a", "25-60", *(["-d", str(TOOL / "modules")] if sle_care else []), "-r", reference.strftime("%Y%m%d"),
               f"--exporter.baseDirectory={tmp}", "--generate.only_alive_patients=true",
               "--exporter.fhir.export=true", "--exporter.fhir.transaction_bundle=true",
               "--exporter.hospital.fhir.export=true", "--exporter.practitioner.fhir.export=true",
               "--exporter.metadata.export=false", "Massachusetts"]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        for f in sorted((Path(tmp) / "fhir").glob("*.json")):
            shutil.copy(f, bundles / f.name)
    write_ndjson(patient_bundles(bundles), out / "ndjson")
    return patient_bundles(bundles)


def patient_bundles(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("*.json") if not f.name.startswith(("hospital", "practitioner")))


def shared_bundles(folder: Path) -> list[Path]:
    """Hospital and practitioner Bundles: loaded before the patients, who refer to them."""
    return sorted(f for f in folder.glob("*.json") if f.name.startswith(("hospital", "practitioner")))


def _relative(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (refs.get(v, v) if k == "reference" else _relative(v, refs)) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, refs) for v in value]
    return value


def write_ndjson(bundles: list[Path], folder: Path) -> None:
    """Bulk Data NDJSON of the patient Bundles: one file per resource type, urn:uuid refs made Type/id."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    by_type: dict[str, list[bytes]] = defaultdict(list)
    for path in bundles:
        entries = orjson.loads(path.read_bytes())["entry"]
        refs = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}
        for e in entries:
            res = _relative(e["resource"], refs)
            by_type[res["resourceType"]].append(orjson.dumps(res))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")


def load(base: str, folder: Path, token: str | None = None) -> list[str]:
    """POST the Bundles to a FHIR server (shared ones first); return the server's ids of the patients."""
    headers = {"Content-Type": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}
    ids = []
    with httpx.Client(timeout=600, headers=headers) as c:
        for path in shared_bundles(folder):
            c.post(base, content=path.read_bytes()).raise_for_status()
        for path in patient_bundles(folder):
            r = c.post(base, content=path.read_bytes())
            r.raise_for_status()
            location = r.json()["entry"][0]["response"]["location"]  # "Patient/<id>/_history/1"
            ids.append(location.split("/")[1])
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "var" / "synthea")
    p.add_argument("--reference-date", type=date.fromisoformat, help="records end on this day (default today)")
    p.add_argument("--load", metavar="FHIR_BASE", help="also load the Bundles into this FHIR server")
    p.add_argument("--general", action="store_true", help="Synthea's own modules only: a general population")
    args = p.parse_args(argv)
    made = generate(args.patients, args.seed, args.out, args.reference_date, sle_care=not args.general)
    print(f"{len(made)} patients: {args.out / 'bundles'} (transaction Bundles), {args.out / 'ndjson'} (NDJSON)")
    if args.load:
        ids = load(args.load.rstrip("/"), args.out / "bundles")
        print(f"loaded into {args.load}: Patient/{', Patient/'.join(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
