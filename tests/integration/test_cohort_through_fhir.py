"""Cohort entry through a real FHIR server (sekmet and HAPI): the service reads the chart itself (no
prefetch) and shows no card to patients without the disease a trial studies, while an SLE coded only in
ICD-10-CM, or only as an encounter diagnosis, gets the cards /match gives for the same records."""

from __future__ import annotations

import json
import uuid
from datetime import date

import httpx
import pytest
from helpers import ext
from test_cohort import INSIDE, OUTSIDE

from cds_service.fhir.gather import Gatherer
from demo.hook_request import fhir_authorization

pytestmark = pytest.mark.integration

CASES_OUT = ["clinic patient", "rheumatoid arthritis on rituximab", "discoid lupus", "drug-induced lupus"]
CASES_IN = ["ICD-10-CM only (M32.14)", "encounter diagnosis only"]


def as_patient(resources: list[dict], pid: str) -> list[dict]:
    """The same records for patient `pid`, with ids of their own (so cases do not overwrite each other)."""
    out = []
    for r in json.loads(json.dumps(resources).replace('"Patient/p1"', f'"Patient/{pid}"')):
        r["id"] = pid if r["resourceType"] == "Patient" else f"{pid}-{r['id']}"[:64]
        out.append(r)
    return out


def put(fhir_server, resources: list[dict]) -> None:
    headers = {"Authorization": f"Bearer {fhir_server.token}"} if fhir_server.token else {}
    entry = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entry}
    r = httpx.post(fhir_server.base, json=bundle, headers=headers, timeout=120)
    assert r.status_code < 300, r.text[:300]


def hook(service, fhir_server, pid: str) -> list[dict]:
    req = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": pid, "userId": "Practitioner/1"},
        "fhirServer": fhir_server.base,
    }
    if fhir_server.token:
        req["fhirAuthorization"] = fhir_authorization(fhir_server.token)
    r = service.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200, r.text[:300]
    return r.json()["cards"]


@pytest.mark.parametrize("case", CASES_OUT)
def test_no_card_outside_the_cohort_when_the_service_reads_the_server(service, fhir_server, case):
    pid = f"cohort-out-{CASES_OUT.index(case)}"
    put(fhir_server, as_patient(OUTSIDE[case](), pid))
    assert hook(service, fhir_server, pid) == []
    report = service.post("/match", params={"patient": pid}).json()
    assert report["gaps"] == [] and {t["status"] for t in report["trials"]} == {"ineligible"}
    assert all(t["cohort"]["reason"].startswith("no diagnosis of") for t in report["trials"])


@pytest.mark.parametrize("case", CASES_IN)
def test_sle_coded_otherwise_gets_the_cards_match_gives(service, fhir_server, case):
    pid = f"cohort-in-{CASES_IN.index(case)}"
    put(fhir_server, as_patient(INSIDE[case](), pid))
    cards = {ext(c)["trialId"]: ext(c)["status"] for c in hook(service, fhir_server, pid)}
    report = service.post("/match", params={"patient": pid, "as_of": date.today().isoformat()}).json()
    assert cards and cards == {
        t["id"]: t["status"] for t in report["trials"] if t["status"] in ("likely-eligible", "possibly-eligible")
    }


@pytest.fixture()
def searched(fhir_server, monkeypatch) -> list[str]:
    """The resource type of every request the service sends to the FHIR server (over real HTTP)."""
    seen: list[str] = []
    real = Gatherer._get

    async def recording(self, url, call):  # noqa: ANN001, ANN202
        seen.append(url[len(fhir_server.base) + 1 :].split("?")[0].split("/")[0])
        return await real(self, url, call)

    monkeypatch.setattr(Gatherer, "_get", recording)
    return seen


def test_a_chart_outside_every_cohort_costs_the_server_two_searches(service, fhir_server, searched):
    """Without prefetch the service asks for the Patient and Conditions first, and for the rest of the chart
    (Observations by the codes the criteria read, every medication source, ...) only when some cohort may open."""
    put(fhir_server, as_patient(OUTSIDE["clinic patient"](), "entry-first-out"))
    put(fhir_server, as_patient(INSIDE["ICD-10-CM only (M32.14)"](), "entry-first-in"))
    assert hook(service, fhir_server, "entry-first-out") == []
    assert set(searched) == {"Patient", "Condition"}, searched
    searched.clear()
    assert hook(service, fhir_server, "entry-first-in")  # inside: the whole chart is read, cards as before
    assert {"Patient", "Condition", "Observation", "MedicationStatement"} <= set(searched), searched
    searched.clear()
    report = service.post("/match", params={"patient": "entry-first-out"}).json()  # /match reads it all
    assert "Observation" in searched and report["gaps"] == []


def hiv_screen(system: str | None) -> list[dict]:
    """A positive HIV screen (LOINC 56888-1) under `system`: LOINC's URI, or its OID as documents converted
    from CDA keep it; None: no screen on record."""
    if system is None:
        return []
    return [{
        "resourceType": "Observation", "id": "hiv-screen", "status": "final",
        "code": {"coding": [{"system": system, "code": "56888-1"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": date.today().replace(day=1).isoformat(),
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]},
    }]  # fmt: skip


def test_a_result_kept_under_another_spelling_of_loinc_is_read_from_the_server(service, fhir_server):
    """The service searches the codes the criteria read without their system, so a server that keeps
    LOINC under its OID answers as one that keeps http://loinc.org: the positive screen is read (the
    cards are those of LOINC's URI), not left out of a search that then counted as read in full."""
    record = INSIDE["ICD-10-CM only (M32.14)"]()
    cards = {}
    for i, system in enumerate([None, "http://loinc.org", "urn:oid:2.16.840.1.113883.6.1"]):
        pid = f"loinc-spelling-{i}"
        put(fhir_server, as_patient(record + hiv_screen(system), pid))
        cards[system] = {ext(c)["trialId"]: ext(c)["status"] for c in hook(service, fhir_server, pid)}
    assert cards[None] != cards["http://loinc.org"]  # the screen decides something
    assert cards["urn:oid:2.16.840.1.113883.6.1"] == cards["http://loinc.org"]
