"""Load the demo patients into a FHIR server, their dates shifted to today.

    python -m demo.load http://localhost:8080/fhir [--as-of 2026-11-23]

Each Bundle's `timestamp` is the date its record is relative to; every date in
it (birth dates included, so ages stay as written) moves by the same number of
days, so a demo loaded a year from now looks just as current.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

PATIENTS_DIR = Path(__file__).parent / "patients"
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T.*)?$")
DATE_KEYS = {
    "birthDate",
    "effectiveDateTime",
    "issued",
    "onsetDateTime",
    "abatementDateTime",
    "recordedDate",
    "authoredOn",
    "occurrenceDateTime",
    "recorded",
    "dateAsserted",
    "start",
    "end",
}


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, dict):
        return {k: (_shift_date(v, days) if k in DATE_KEYS else _shift(v, days)) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, days) for v in value]
    return value


def _shift_date(v: Any, days: int) -> Any:
    if not isinstance(v, str):
        return _shift(v, days)
    m = _DATE.match(v)
    if not m:
        return v
    return (date.fromisoformat(m.group(1)) + timedelta(days=days)).isoformat() + (m.group(2) or "")


def reference_date(bundle: dict) -> date:
    return date.fromisoformat(bundle["timestamp"][:10])


def shifted(bundle: dict, as_of: date | None = None) -> dict:
    """The Bundle with every date moved so that its reference date becomes `as_of` (default today)."""
    days = ((as_of or date.today()) - reference_date(bundle)).days
    out = _shift(bundle, days)
    out["timestamp"] = f"{(as_of or date.today()).isoformat()}T00:00:00Z"
    return out


def demo_bundles(as_of: date | None = None) -> dict[str, dict]:
    """Patient id -> shifted transaction Bundle."""
    return {
        p.stem: shifted(json.loads(p.read_text(encoding="utf-8")), as_of) for p in sorted(PATIENTS_DIR.glob("*.json"))
    }


def resources(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", [])]


def load(base_url: str, as_of: date | None = None, wait_seconds: float = 0, token: str | None = None) -> int:
    """POST every demo Bundle as a transaction. Returns the number of resources written."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(timeout=120, headers=headers)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:  # the FHIR server may still be starting (docker compose)
            try:
                if client.get(f"{base_url}/metadata").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"FHIR server at {base_url} is not answering")
            time.sleep(2)
        written = 0
        for pid, bundle in demo_bundles(as_of).items():
            r = client.post(base_url, json=bundle, headers={"Content-Type": "application/fhir+json"})
            if r.status_code >= 300:
                raise SystemExit(f"{pid}: transaction failed with HTTP {r.status_code}")
            written += len(bundle["entry"])
        return written
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base_url", help="FHIR base URL, e.g. http://localhost:8080/fhir")
    p.add_argument("--as-of", type=date.fromisoformat, help="date the records should be current on (default today)")
    p.add_argument("--wait", type=float, default=120, help="seconds to wait for the server to answer")
    p.add_argument("--token", help="bearer token for the FHIR server (default: $FHIR_TOKEN)")
    args = p.parse_args(argv)
    n = load(args.base_url.rstrip("/"), args.as_of, args.wait, args.token or os.environ.get("FHIR_TOKEN"))
    print(f"loaded {n} resources of {len(list(PATIENTS_DIR.glob('*.json')))} demo patients into {args.base_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
