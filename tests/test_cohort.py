"""Cohort entry: a trial speaks only about patients who have the disease it studies.

Patients without it on record (an ordinary clinic patient, rheumatoid arthritis on rituximab, discoid
lupus, drug-induced lupus) are `ineligible` with one clear reason and get no card, through the hook with
the four classic prefetch keys and with all keys, `/match` and the CLI. Patients with SLE coded any way
a record holds it stay in. Expectations come from each trial's own entry, never from a list of trials.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from helpers import CLASSIC_KEYS, OPTIONAL_KEYS, evaluate, open_service

from cds_service.cli import main
from cds_service.eligibility.cohort import disease
from demo import synthetic as syn
from demo.hook_request import prefetch_for

AS_OF = date(2026, 11, 23)
ALL_KEYS = (*CLASSIC_KEYS, *OPTIONAL_KEYS)
SNOMED, ICD10CM, WHO = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"
SLE_CODES = {"55464009", "M32.9"}


def d(n: int) -> str:
    return (AS_OF - timedelta(days=n)).isoformat()


def cond(codings: list[tuple[str, str]], text: str | None = None, **fields) -> dict:
    res = {
        "resourceType": "Condition",
        "id": f"c-{uuid.uuid4().hex[:8]}",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        **fields,
    }
    if text:
        res["code"]["text"] = text
    return res


def status(system: str, code: str) -> dict:
    return {"coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system}", "code": code}]}


def without_sle(resources: list[dict]) -> list[dict]:
    def sle(r: dict) -> bool:
        return r["resourceType"] == "Condition" and any(
            c.get("code") in SLE_CODES for c in r.get("code", {}).get("coding", [])
        )

    return [r for r in resources if not sle(r)]


def clinic_patient() -> list[dict]:
    """A 44-year-old woman with hypertension and a hemoglobin, nothing else."""
    return [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1982-03-01"},
        cond([(SNOMED, "38341003"), (ICD10CM, "I10")], "Essential hypertension"),
        syn.quantity("p1", "718-7", 13.1, "g/dL", d(20), display="Hemoglobin"),
    ]


def rheumatoid_on_rituximab() -> list[dict]:
    base = without_sle(syn.eligible_patient(AS_OF))
    ritux = {
        "resourceType": "MedicationStatement",
        "id": "ms-ritux",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "121191"}]
        },
        "effectivePeriod": {"start": d(60)},
    }
    return [*base, cond([(SNOMED, "69896004"), (ICD10CM, "M06.9")], "Rheumatoid arthritis"), ritux]


def with_only(condition: dict) -> list[dict]:
    """The fully eligible SLE patient with the SLE diagnosis replaced by `condition`."""
    return [*without_sle(syn.eligible_patient(AS_OF)), condition]


OUTSIDE = {
    "clinic patient": clinic_patient,
    "rheumatoid arthritis on rituximab": rheumatoid_on_rituximab,
    "discoid lupus": lambda: with_only(
        cond([(SNOMED, "200938002"), (ICD10CM, "L93.0")], "Discoid lupus erythematosus")
    ),
    "drug-induced lupus": lambda: with_only(cond([(SNOMED, "201436003"), (ICD10CM, "M32.0")], "Drug-induced SLE")),
    "drug-induced lupus, text only": lambda: with_only(cond([], "Drug-induced systemic lupus erythematosus")),
    "SLE negated in text": lambda: with_only(cond([], "No SLE; ruled out by rheumatology")),
    "SLE refuted": lambda: with_only(
        cond([(SNOMED, "55464009")], verificationStatus=status("condition-ver-status", "refuted"))
    ),
    "SLE entered in error": lambda: with_only(
        cond([(ICD10CM, "M32.9")], verificationStatus=status("condition-ver-status", "entered-in-error"))
    ),
    "SLE only as a health concern": lambda: with_only(
        cond([(SNOMED, "55464009")], category=[status("condition-category", "health-concern")])
    ),
    "drug-induced lupus, ICD-10-CM without the dot (M320)": lambda: with_only(cond([(ICD10CM, "M320")])),
}

INSIDE = {
    "SNOMED CT": lambda: syn.eligible_patient(AS_OF),
    "ICD-10-CM only (M32.14)": lambda: with_only(cond([(ICD10CM, "M32.14")], onsetDateTime=d(2000))),
    "WHO ICD-10 only": lambda: with_only(cond([(WHO, "M32.9")], onsetDateTime=d(2000))),
    "encounter diagnosis only": lambda: with_only(
        cond(
            [(ICD10CM, "M32.9")], category=[status("condition-category", "encounter-diagnosis")], onsetDateTime=d(2000)
        )
    ),
    "inactive (SLE does not resolve)": lambda: with_only(
        cond([(SNOMED, "55464009")], clinicalStatus=status("condition-clinical", "inactive"), onsetDateTime=d(2000))
    ),
    "provisional": lambda: with_only(
        cond([(SNOMED, "55464009")], verificationStatus=status("condition-ver-status", "provisional"))
    ),
    "text only": lambda: with_only(cond([], "Systemic lupus erythematosus", onsetDateTime=d(2000))),
    "display only, local code": lambda: with_only(
        {**cond([]), "code": {"coding": [{"system": "urn:local", "code": "L1", "display": "SLE"}]}}
    ),
    "ICD-10-CM without the dot (M3214)": lambda: with_only(cond([(ICD10CM, "M3214")])),
    "ICD-10-CM under its OID": lambda: with_only(cond([("urn:oid:2.16.840.1.113883.6.90", "M32.14")])),
    "SNOMED CT under its OID": lambda: with_only(cond([("urn:oid:2.16.840.1.113883.6.96", "55464009")])),
    "SNOMED CT edition in the system": lambda: with_only(
        cond([("http://snomed.info/sct/731000124108/version/20230301", "55464009")])
    ),
    "a category spelled in capitals": lambda: with_only(
        cond([(SNOMED, "55464009")], category=[{"coding": [{"system": "urn:local", "code": "Problem-List-Item"}]}])
    ),
    "a category written as text only": lambda: with_only(
        cond([(SNOMED, "55464009")], category=[{"text": "Problem List Item"}])
    ),
    "SNOMED CT 439401001 Diagnosis as the category": lambda: with_only(
        cond([(SNOMED, "55464009")], category=[{"coding": [{"system": SNOMED, "code": "439401001"}]}])
    ),
    "a past medical history category": lambda: with_only(
        cond(
            [(SNOMED, "55464009")], category=[{"coding": [{"system": "urn:local:category", "code": "medical-history"}]}]
        )
    ),
}


def sle_trials(catalog) -> list[str]:
    return [t.id for t in catalog.trials.values() if "sle" in t.entry_groups]


@pytest.mark.parametrize("case", OUTSIDE, ids=list(OUTSIDE))
def test_outside_the_cohort_is_ineligible_with_the_entry_reason(catalog, case):
    resources = OUTSIDE[case]()
    for tid in sle_trials(catalog):
        r = evaluate(catalog, resources, tid, AS_OF)
        assert r.status == "ineligible", (case, tid, r.cohort)
        assert (
            r.cohort.outcome == "out"
            and r.cohort.reason == f"no diagnosis of {disease(catalog.trials[tid], catalog.mappings)} on record"
        )
        assert r.criteria == []  # nothing else is read or said


@pytest.mark.parametrize("case", INSIDE, ids=list(INSIDE))
def test_sle_coded_any_way_a_record_holds_it_enters(catalog, case):
    resources = INSIDE[case]()
    for tid in sle_trials(catalog):
        r = evaluate(catalog, resources, tid, AS_OF)
        assert r.cohort.outcome == "in", (case, tid, r.cohort)
        assert r.cohort.evidence and r.criteria


@pytest.mark.parametrize(
    "category",
    [
        [{"coding": [{"system": "urn:local:category", "code": "reason-for-visit"}]}],
        [{"text": "Family history"}],  # text only: read, and not a diagnosis category
        [{"coding": [{"display": "Family history"}]}],  # neither a code nor a text
    ],
    ids=["a site's code", "text only", "a display only"],
)
def test_sle_under_a_category_this_service_does_not_know_is_not_assessed(catalog, category):
    """A site's own category (a reason for visit, a family-history section) may or may not record the patient's
    diagnosis: no card, and the screen says a person checks, rather than "no diagnosis on record"; the
    Condition to check is named, its category is not quoted."""
    sle = cond([(SNOMED, "55464009")], category=category)
    for tid in sle_trials(catalog):
        r = evaluate(catalog, with_only(sle), tid, AS_OF)
        assert r.status == "not-assessed" and r.cohort.outcome == "unknown", (tid, r.cohort)
        assert "category" in r.cohort.reason and "reason-for-visit" not in r.cohort.reason
        assert [e.resource for e in r.cohort.evidence] == [f"Condition/{sle['id']}"]


def test_a_health_concern_with_a_translation_is_still_a_health_concern(catalog):
    concern = [
        {
            "coding": [
                {"system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category", "code": "health-concern"},
                {"display": "Health Concern"},
                {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.10375", "code": "3"},
            ]
        }
    ]
    resources = with_only(cond([(SNOMED, "55464009")], category=concern))
    for tid in sle_trials(catalog):
        assert evaluate(catalog, resources, tid, AS_OF).cohort.outcome == "out", tid


def test_a_lupus_nephritis_concept_alone_enters(catalog):
    """A problem list holding only a lupus nephritis concept (Oracle Health lists often carry SNOMED CT
    alone) records SLE: every concept of the lupus nephritis group opens every SLE trial's entry."""
    for code in catalog.mappings.conditions.groups["lupus_nephritis"].snomed:
        resources = with_only(cond([(SNOMED, code)]))
        for tid in sle_trials(catalog):
            assert evaluate(catalog, resources, tid, AS_OF).cohort.outcome == "in", (code, tid)


def test_sle_in_another_code_gets_the_same_verdicts(catalog):
    """SLE coded only in ICD-10-CM, or only in WHO ICD-10, decides as the SNOMED-coded SLE does."""
    snomed = syn.eligible_patient(AS_OF)
    sle = next(r for r in snomed if r["resourceType"] == "Condition" and "55464009" in json.dumps(r))
    for system in (ICD10CM, WHO):
        other = [*without_sle(snomed), {**sle, "code": {"coding": [{"system": system, "code": "M32.9"}]}}]
        for tid in catalog.trials:
            a, b = evaluate(catalog, snomed, tid, AS_OF), evaluate(catalog, other, tid, AS_OF)
            assert (a.status, [c.outcome for c in a.criteria]) == (b.status, [c.outcome for c in b.criteria]), tid


def test_no_condition_data_is_not_assessed_and_says_why(catalog):
    no_conditions = [r for r in syn.eligible_patient(AS_OF) if r["resourceType"] != "Condition"]
    facts = catalog.facts(no_conditions, "p1", gathered={"Observation", "MedicationStatement"})
    for r in catalog.report(facts, AS_OF).trials:
        assert r.status == "not-assessed" and r.cohort.outcome == "unknown"
        assert "no condition data could be read" in r.cohort.reason


def test_an_unreadable_condition_keeps_absence_unproven(catalog):
    unreadable = {**cond([]), "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "X1"}]}}
    resources = [*clinic_patient(), unreadable]
    for r in catalog.report(catalog.facts(resources, "p1"), AS_OF).trials:
        assert r.status == "not-assessed" and "1 condition could not be read" in r.cohort.reason


# --- through the service: no card outside the cohort ----------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with open_service(tmp_path_factory.mktemp("cohort"), as_of=AS_OF) as c:
        yield c


def hook(client, resources: list[dict], keys: tuple[str, ...] | None) -> tuple[int, dict]:
    req = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"}}
    if keys is not None:
        req["prefetch"] = prefetch_for(resources, "p1", keys)
    r = client.post("/cds-services/trial-matcher", json=req)
    return r.status_code, r.json()


@pytest.mark.parametrize("keys", [CLASSIC_KEYS, ALL_KEYS], ids=["classic keys", "all keys"])
@pytest.mark.parametrize(
    "case", ["clinic patient", "rheumatoid arthritis on rituximab", "discoid lupus", "drug-induced lupus"]
)
def test_the_hook_shows_no_card_outside_the_cohort(client, case, keys):
    code, body = hook(client, OUTSIDE[case](), keys)
    assert code == 200 and body["cards"] == []


@pytest.mark.parametrize("keys", [CLASSIC_KEYS, ALL_KEYS], ids=["classic keys", "all keys"])
def test_the_hook_still_cards_sle_patients(client, keys):
    code, body = hook(client, syn.eligible_patient(AS_OF), keys)
    assert code == 200 and body["cards"]


def test_no_conditions_prefetched_and_no_server_means_no_card(client):
    code, body = hook(client, syn.eligible_patient(AS_OF), ("patient", "observations", "medications"))
    assert code == 200 and body["cards"] == []


def test_match_says_why(client):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in clinic_patient()]}
    r = client.post("/match", json=bundle, params={"as_of": AS_OF.isoformat()})
    assert r.status_code == 200
    for t in r.json()["trials"]:
        assert t["status"] == "ineligible" and t["cohort"]["reason"].startswith("no diagnosis of")


def test_the_cli_says_why(tmp_path, capsys):
    path = tmp_path / "patient.json"
    path.write_text(
        json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in clinic_patient()]}
        )
    )
    assert main(["evaluate", str(path), "--as-of", AS_OF.isoformat(), "--format", "json"]) == 1  # no match
    out = json.loads(capsys.readouterr().out)
    assert all(t["status"] == "ineligible" and "no diagnosis of" in t["cohort"]["reason"] for t in out["trials"])
    assert main(["evaluate", str(path), "--as-of", AS_OF.isoformat()]) == 1
    assert "no diagnosis of systemic lupus erythematosus on record" in capsys.readouterr().out


def test_an_exclusion_recorded_as_a_health_concern_goes_to_a_person(catalog):
    """A cancer recorded as a health concern ("Worried about breast cancer") or under a category that may not be
    a diagnosis was a definite fail of every malignancy exclusion: a person reads it, no trial is ineligible."""
    for category in ("health-concern", "reason-for-visit"):
        worry = cond(
            [(ICD10CM, "C50.911")],
            "Worried about breast cancer",
            category=[{"coding": [{"system": "urn:local:category", "code": category}]}],
            clinicalStatus=status("condition-clinical", "active"),
            onsetDateTime=d(30),
        )
        for tid in sle_trials(catalog):
            base = evaluate(catalog, syn.eligible_patient(AS_OF), tid, AS_OF).status
            r = evaluate(catalog, [*syn.eligible_patient(AS_OF), worry], tid, AS_OF)
            assert r.status != "ineligible" or base == "ineligible", (category, tid)
