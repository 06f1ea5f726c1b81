"""A record built the way a large EHR sends it, through every route, on both real servers (sekmet, HAPI).

Medications by reference (the Medication comes by `_include`), an infusion recorded only as a
MedicationAdministration, a problem-list history code with no dates, the HIV screen as the text "Non
Reactive": the hook with the four classic prefetch keys (the rest read from `fhirServer`), with every
key, and with no prefetch at all gives the cards the Bundle gives to `/match`; and the criteria the
seeds speak to get their verdicts (clinical audit 2: NS1, NS2, NS5, NH1).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from helpers import CLASSIC_KEYS, ext

from cds_service.fhir.queries import QUERIES
from demo import synthetic as syn
from demo.hook_request import fhir_authorization

pytestmark = pytest.mark.integration
T1 = "NCT06902844"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PROBLEM_LIST = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item"}]}  # fmt: skip


def large_ehr_record(pid: str, today: date) -> list[dict]:
    d = lambda n: (today - timedelta(days=n)).isoformat()  # noqa: E731
    res = [r for r in syn.eligible_patient(today, pid) if "56888-1" not in str(r.get("code"))]
    for r in res:
        if r["resourceType"] == "Condition":
            r["category"] = [PROBLEM_LIST]
    hiv = syn._obs_base(pid, "http://loinc.org", "56888-1", "HIV 1+2 Ab+p24 Ag", d(20), "final")
    hiv["valueString"] = "Non Reactive"
    history = syn.condition(pid, icd="Z85.3", display="Personal history of malignant neoplasm of breast")
    history.pop("onsetDateTime", None)
    history["id"], history["category"] = f"{pid}-z853", [PROBLEM_LIST]
    med = {"resourceType": "Medication", "id": f"{pid}-med-ritux",
           "code": {"coding": [{"system": RXNORM, "code": "121191", "display": "rituximab"}]}}  # fmt: skip
    order = {"resourceType": "MedicationRequest", "id": f"{pid}-mr-ritux", "status": "completed", "intent": "order",
             "subject": {"reference": f"Patient/{pid}"}, "authoredOn": d(20),
             "medicationReference": {"reference": f"Medication/{med['id']}"}}  # fmt: skip
    infusion = {"resourceType": "MedicationAdministration", "id": f"{pid}-ma-beli", "status": "completed",
                "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": d(10),
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1092437"}],
                                              "text": "belimumab infusion"}}  # fmt: skip
    return [*res, hiv, history, med, order, infusion]


def put(fhir_server, resources: list[dict]) -> None:
    headers = {"Authorization": f"Bearer {fhir_server.token}"} if fhir_server.token else {}
    bundle = syn.bundle(resources, "transaction")
    r = httpx.post(fhir_server.base, json=bundle, headers=headers, timeout=120)
    assert r.status_code < 300, r.text[:300]


def prefetch(resources: list[dict], pid: str, keys: tuple[str, ...]) -> dict:
    """What the EHR sends for these keys: searchset Bundles, the referenced Medications as `include` entries."""
    out: dict = {}
    for key, (_template, rtype) in QUERIES.items():
        if key not in keys:
            continue
        if rtype == "Patient":
            out[key] = next(r for r in resources if r["resourceType"] == "Patient")
            continue
        hits = [r for r in resources if r["resourceType"] == rtype]
        named = {r.get("medicationReference", {}).get("reference") for r in hits}
        included = [r for r in resources if r["resourceType"] == "Medication" and f"Medication/{r['id']}" in named]
        entry = [{"resource": r, "search": {"mode": "match"}} for r in hits]
        entry += [{"resource": r, "search": {"mode": "include"}} for r in included]
        out[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(hits), "entry": entry}
    return out


def cards(service, fhir_server, pid: str, keys: tuple[str, ...] | None, resources: list[dict]) -> set:
    req: dict = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": pid}}
    if keys is not None:
        req["prefetch"] = prefetch(resources, pid, keys)
    if keys != tuple(QUERIES):  # the service reads the rest from the server
        req["fhirServer"] = fhir_server.base
        if fhir_server.token:
            req["fhirAuthorization"] = fhir_authorization(fhir_server.token)
    r = service.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200, r.text[:300]
    shown = r.json()["cards"]
    assert not any("could not be read" in c.get("detail", "") for c in shown), "every source was readable"
    return {(ext(c)["trialId"], ext(c)["status"]) for c in shown}


def test_a_large_ehr_record_gets_the_same_verdicts_through_every_route(service, fhir_server):
    today = date.today()
    pid = f"ehr-{uuid.uuid4().hex[:10]}"
    resources = large_ehr_record(pid, today)
    put(fhir_server, resources)
    bundle = syn.bundle(resources)
    by_bundle = service.post("/match", json=bundle, params={"as_of": today.isoformat()})
    assert by_bundle.status_code == 200, by_bundle.text[:300]
    report = {t["id"]: t for t in by_bundle.json()["trials"]}

    t1 = {c["id"]: c for c in report[T1]["criteria"]}
    washout = t1["exc-7.3"]  # rituximab ordered by reference 20 days ago, belimumab infused 10 days ago
    assert washout["outcome"] == "fail" and washout["until"] > today.isoformat()
    cited = {e.get("resource") for e in washout.get("evidence", [])}
    assert f"MedicationRequest/{pid}-mr-ritux" in cited and f"MedicationAdministration/{pid}-ma-beli" in cited
    assert t1["exc-20"]["outcome"] == "review"  # an undated history of breast cancer: a person decides
    assert t1["exc-11"]["outcome"] == "pass"  # "Non Reactive" is a negative HIV screen

    by_id = {t["id"]: t for t in service.post("/match", params={"patient": pid}).json()["trials"]}
    for tid, t in report.items():
        got = {c["id"]: c["outcome"] for c in by_id[tid]["criteria"]}
        assert by_id[tid]["status"] == t["status"], tid
        assert got == {c["id"]: c["outcome"] for c in t["criteria"]}, tid

    expected = {(tid, t["status"]) for tid, t in report.items() if t["status"] in ("likely-eligible",
                                                                                     "possibly-eligible")}  # fmt: skip
    assert expected, "the record is inside the cohort of some trial"
    for keys in (CLASSIC_KEYS, tuple(QUERIES), None):
        assert cards(service, fhir_server, pid, keys, resources) == expected, keys
