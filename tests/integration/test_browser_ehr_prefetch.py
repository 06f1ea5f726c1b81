"""Prefetch as a browser EHR sends it: each discovery template run once against the real server, first page
only (the CDS Hooks sandbox follows no `next` link). With `fhirServer` given, patient-view and order-select
then see the same record, so a trial order-select warns about has the status patient-view shows."""

from __future__ import annotations

import uuid

import httpx
import pytest
from helpers import ext

from demo.hook_request import fhir_authorization
from demo.load import demo_bundles

pytestmark = pytest.mark.integration
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def first_pages(service, fhir_server, patient: str) -> dict:
    """What a browser EHR prefetches: each template of discovery, one GET, the first page as it comes."""
    templates = service.get("/cds-services").json()["services"][0]["prefetch"]
    headers = {"Authorization": f"Bearer {fhir_server.token}"} if fhir_server.token else {}
    out = {}
    for key, template in templates.items():
        r = httpx.get(f"{fhir_server.base}/{template.replace('{{context.patientId}}', patient)}", headers=headers)
        if r.status_code == 200:  # a server that refuses a template sends no prefetch for it
            out[key] = r.json()
    return out


def request(hook: str, patient: str, prefetch: dict, fhir_server, draft: dict | None = None) -> dict:
    ctx: dict = {"patientId": patient, "userId": "Practitioner/1"}
    if draft is not None:
        ctx["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
        ctx["selections"] = [f"MedicationRequest/{draft['id']}"]
    req = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx, "prefetch": prefetch}
    req["fhirServer"] = fhir_server.base
    if fhir_server.token:
        req["fhirAuthorization"] = fhir_authorization(fhir_server.token)
    return req


def rituximab(patient: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "121191", "display": "riTUXimab"}]},
    }


@pytest.mark.parametrize("patient", sorted(demo_bundles()))
def test_patient_view_and_order_select_agree_on_a_first_page_prefetch(service, fhir_server, patient):
    prefetch = first_pages(service, fhir_server, patient)
    assert "patient" in prefetch and "observations" in prefetch  # the templates run on this server
    view = service.post("/cds-services/trial-matcher", json=request("patient-view", patient, prefetch, fhir_server))
    assert view.status_code == 200, view.text[:300]
    shown = {ext(c)["trialId"]: ext(c)["status"] for c in view.json()["cards"]}
    select = service.post(
        "/cds-services/trial-order-select",
        json=request("order-select", patient, prefetch, fhir_server, rituximab(patient)),
    )
    assert select.status_code == 200, select.text[:300]
    for card in select.json()["cards"]:
        assert shown.get(ext(card)["trialId"]) == ext(card)["status"], (patient, ext(card))
    full = service.post("/cds-services/trial-matcher", json=request("patient-view", patient, {}, fhir_server))
    assert shown == {ext(c)["trialId"]: ext(c)["status"] for c in full.json()["cards"]}  # as if read in full
