"""HealthChain 0.16 playing the EHR against the service: run by test_healthchain_client.py in .venv-healthchain.

    .venv-healthchain/bin/python tests/integration/healthchain_driver.py CASES.json OUT.json

HealthChain's pins (httpx < 0.28, fhir.resources < 8.2, fastapi < 0.138) clash with ours, so it lives in
its own virtual environment and this script imports nothing of the project. It builds every request
with HealthChain's models, sends patient-view through HealthChain's own SandboxClient, validates every
response with HealthChain's response models, and writes what it saw (raw bodies too) for the test to judge.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
from healthchain.models.hooks.orderselect import OrderSelectContext
from healthchain.models.hooks.ordersign import OrderSignContext
from healthchain.models.hooks.patientview import PatientViewContext
from healthchain.models.requests.cdsrequest import CDSRequest
from healthchain.models.responses.cdsdiscovery import CDSServiceInformation
from healthchain.models.responses.cdsfeedback import CDSFeedback
from healthchain.models.responses.cdsresponse import CDSResponse
from healthchain.sandbox.sandboxclient import SandboxClient
from pydantic import BaseModel, ValidationError

CONTEXTS = {"patient-view": PatientViewContext, "order-select": OrderSelectContext, "order-sign": OrderSignContext}


def errors(model: type[BaseModel], body: Any) -> list[list[str]]:
    """HealthChain's validation errors of a body: [last field name, error type] each."""
    try:
        model.model_validate(body)
    except ValidationError as e:
        return sorted({(str(x["loc"][-1]), x["type"]) for x in e.errors()})
    return []


def request_body(case: dict) -> tuple[dict, list[str]]:
    """The request as HealthChain's models build it, and the context fields its serialisation dropped.

    CDSRequest types `context` as the base hook context, so its dump keeps only the base fields:
    order-select loses `selections` and `draftOrders`, which CDS Hooks 2.0 makes REQUIRED there.
    The context is put back from the context model's own dump."""
    context = CONTEXTS[case["hook"]](**case["context"])
    request = CDSRequest(hook=case["hook"], context=context, prefetch=case.get("prefetch"))
    body = request.model_dump(exclude_none=True, mode="json")
    full = context.model_dump(exclude_none=True, mode="json")
    dropped = sorted(set(full) - set(body["context"]))
    body["context"] = full
    return body, dropped


def run(cases: dict) -> dict:
    base = cases["base"]
    out: dict[str, Any] = {"hooks": [], "feedback": []}
    with httpx.Client(timeout=60) as http:
        d = http.get(f"{base}/cds-services")
        found = errors(CDSServiceInformation, d.json())
        out["discovery"] = {"status": d.status_code, "body": d.json(), "healthchain_errors": found}
        for case in cases["cases"]:
            body, dropped = request_body(case)
            url = f"{base}/cds-services/{case['service']}"
            via_client = None
            if case["hook"] == "patient-view":  # HealthChain's own client sends it (it keeps no status code)
                client = SandboxClient(url=url, workflow=case["hook"], timeout=60)
                client.requests = [CDSRequest(**body)]
                via_client = client.send_requests()[0]
            r = http.post(url, json=body)
            raw = r.json()
            out["hooks"].append(
                {
                    "name": case["name"],
                    "hook": case["hook"],
                    "status": r.status_code,
                    "body": raw,
                    "context_dropped_by_healthchain": dropped,
                    "healthchain_errors": errors(CDSResponse, raw),
                    "sandbox_client_cards": None if via_client is None else len(via_client.get("cards", [])),
                }
            )
        out["feedback"] = feedback(http, base, out["hooks"])
        out["synthetic"] = synthetic(f"{base}/cds-services/trial-matcher")
    return out


def feedback(http: httpx.Client, base: str, hooks: list[dict]) -> list[dict]:
    """HealthChain's CDSFeedback, as it serialises: `acceptedSuggestion` where the spec says `acceptedSuggestions`."""
    card = next(c for h in hooks if h["hook"] == "patient-view" for c in h["body"].get("cards", []))
    sent = []
    for outcome in ("overridden", "accepted"):
        fb = CDSFeedback(card=card["uuid"], outcome=outcome, outcomeTimestamp="2026-12-01T10:00:00Z")
        if outcome == "accepted":
            fb.acceptedSuggestion = {"id": "not-a-suggestion-of-this-card"}
        body = {"feedback": [fb.model_dump(exclude_none=True, mode="json")]}
        r = http.post(f"{base}/cds-services/trial-matcher/feedback", json=body)
        sent.append({"outcome": outcome, "status": r.status_code, "sent": body})
    return sent


def synthetic(url: str) -> dict:
    """HealthChain's synthetic patient-view requests: its own prefetch keys and a random patient id."""
    client = SandboxClient(url=url, workflow="patient-view", timeout=60)
    client.load_synthetic(n=2, random_seed=7)
    requests = [r.model_dump(exclude_none=True, mode="json") for r in client.requests]  # as its client sends them
    with httpx.Client(timeout=60) as http:
        answers = [http.post(url, json=r) for r in requests]
    return {
        "prefetch_keys": sorted({k for r in requests for k in (r.get("prefetch") or {})}),
        "statuses": [a.status_code for a in answers],
        "bodies": [a.json() for a in answers],
    }


if __name__ == "__main__":
    cases_path, out_path = sys.argv[1], sys.argv[2]
    with open(cases_path, encoding="utf-8") as f:
        result = run(json.load(f))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
