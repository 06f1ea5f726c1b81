"""Print a CDS Hooks patient-view request for a demo patient.

python -m demo.hook_request demo-amara                      # full prefetch, no FHIR server
python -m demo.hook_request demo-amara --prefetch none --fhir-server http://localhost:8080/fhir
python -m demo.hook_request demo-amara --prefetch partial --fhir-server URL --token TOKEN
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import date
from typing import Any

from cds_service.fhir.gather import QUERIES

from .load import demo_bundles, resources

PARTIAL_KEYS = ("patient", "conditions")


def prefetch_for(res: list[dict], patient_id: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """What an EHR would send for our prefetch templates: the Patient, and a searchset Bundle (or null) per search."""
    out: dict[str, Any] = {}
    for key, (_template, rtype) in QUERIES.items():
        if keys is not None and key not in keys:
            continue
        if rtype == "Patient":
            out[key] = next(r for r in res if r["resourceType"] == "Patient" and r["id"] == patient_id)
            continue
        matching = [r for r in res if r["resourceType"] == rtype]
        out[key] = (
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matching),
                "entry": [{"resource": r, "search": {"mode": "match"}} for r in matching],
            }
            if matching
            else None
        )
    return out


def fhir_authorization(token: str) -> dict[str, Any]:
    """The `fhirAuthorization` object an EHR sends with a bearer token for the FHIR server."""
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "trial-matcher",
    }


def hook_request(
    patient_id: str,
    prefetch: str = "full",
    fhir_server: str | None = None,
    token: str | None = None,
    as_of: date | None = None,
) -> dict[str, Any]:
    res = resources(demo_bundles(as_of)[patient_id])
    req: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/demo-clinician", "patientId": patient_id},
    }
    if fhir_server:
        req["fhirServer"] = fhir_server
    if token:
        req["fhirAuthorization"] = fhir_authorization(token)
    if prefetch == "full":
        req["prefetch"] = prefetch_for(res, patient_id)
    elif prefetch == "partial":
        req["prefetch"] = prefetch_for(res, patient_id, PARTIAL_KEYS)
    return req


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print a patient-view hook request for a demo patient")
    p.add_argument("patient", help="demo patient id, e.g. demo-amara")
    p.add_argument("--prefetch", choices=["full", "partial", "none"], default="full")
    p.add_argument("--fhir-server")
    p.add_argument("--token")
    args = p.parse_args(argv)
    json.dump(hook_request(args.patient, args.prefetch, args.fhir_server, args.token), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
