"""Attacks on the hooks' cohort-first shortcut (Catalog.outside_facts, Matcher.report(whole=False)) and on
Settings.store_problem.

The shortcut is safe only if no record can make the hooks' answer (patient-view cards, order-sign and
order-select cards, statuses) differ from the whole record's. Every test here compares the two answers on
adversarial records rather than naming trials, so it holds whatever the catalogue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from helpers import drop, open_service, screen_kept

from cds_service.eligibility.orders import draft_orders, impacts
from cds_service.fhir.facts import SOURCES
from cds_service.fhir.gather import Gathered, Gatherer
from cds_service.fhir.urls import AllowList
from cds_service.pipeline import Matcher
from cds_service.screening.run import cohort_first
from cds_service.settings import Settings
from cds_service.store import open_store
from cds_service.views.cards import cards_for
from cds_service.views.order_cards import order_cards
from demo import synthetic as syn
from demo.hook_request import prefetch_for

ROOT = Path(__file__).resolve().parent.parent
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
SLE_CODES = ("55464009", "M32.9", "M32.10", "M32.14", "M32.19")


# --- records ---------------------------------------------------------------------------------------------


def cond(
    cid: str,
    *,
    code: str | None = None,
    system: str = SNOMED,
    text: str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    category: str | None = None,
    subject: object = "Patient/p1",
    **extra: object,
) -> dict:
    res: dict = {"resourceType": "Condition", "id": cid, "code": {}}
    if code is not None:
        res["code"]["coding"] = [{"system": system, "code": code}]
    if text is not None:
        res["code"]["text"] = text
    if clinical:
        res["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    if verification:
        res["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": verification}]}
    if category:
        res["category"] = [{"coding": [{"system": CATEGORY, "code": category}]}]
    if subject is not None:
        res["subject"] = subject if isinstance(subject, dict) else {"reference": subject}
    res.update(extra)
    return res


def background(as_of) -> list[dict]:
    """A full chart (labs, medications) with its lupus taken out and hypertension on the problem list."""
    return [*drop(syn.eligible_patient(as_of), *SLE_CODES), cond("htn", code="I10", system=ICD10, text="Hypertension")]


SLE = {"code": "55464009", "text": "Systemic lupus erythematosus"}

# Conditions (and Patient changes) added to the chart without lupus: each either opens some entry, may open
# one, or keeps the patient outside; the hooks must answer each as the whole record does.
VARIANTS: dict[str, list[dict]] = {
    "nothing": [],
    "sle coded": [cond("c", **SLE)],
    "sle text only": [cond("c", text="Systemic lupus erythematosus")],
    "sle display only": [
        cond("c", clinical=None) | {"code": {"coding": [{"system": "urn:x", "display": "Systemic lupus"}]}}
    ],
    "no SLE (text)": [cond("c", text="no SLE")],
    "family history of SLE": [cond("c", text="family history of SLE")],
    "r/o SLE coded as SLE": [cond("c", code="55464009", text="r/o SLE")],
    "suspected SLE": [cond("c", text="suspected SLE")],
    "history of SLE": [cond("c", text="history of SLE")],
    "refuted SLE": [cond("c", **SLE, verification="refuted")],
    "entered-in-error SLE": [cond("c", **SLE, verification="entered-in-error")],
    "provisional SLE": [cond("c", **SLE, verification="provisional")],
    "resolved SLE": [cond("c", **SLE, clinical="resolved")],
    "SLE abated, no status": [cond("c", **SLE, clinical=None, abatementDateTime="2020-01-01")],
    "health-concern SLE": [cond("c", **SLE, category="health-concern")],
    "encounter-diagnosis SLE": [cond("c", **SLE, category="encounter-diagnosis")],
    "health-concern + problem-list SLE": [
        cond("c", **SLE)
        | {
            "category": [
                {"coding": [{"system": CATEGORY, "code": "health-concern"}]},
                {"coding": [{"system": CATEGORY, "code": "problem-list-item"}]},
            ]
        }
    ],
    "lupus nephritis only": [cond("c", code="M32.14", system=ICD10, text="Glomerular disease in SLE")],
    "inactive lupus nephritis": [cond("c", code="M32.14", system=ICD10, clinical="inactive")],
    "unknown local code": [cond("c", code="X-17", system="urn:oid:1.2.3.4")],
    "text nobody maps": [cond("c", text="Breast cancer")],
    "empty condition": [{"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p1"}}],
    "sle malformed onset": [cond("c", **SLE, onsetDateTime="not-a-date")],
    "sle STU3 clinicalStatus": [cond("c", **SLE, clinical=None) | {"clinicalStatus": "active"}],
    "sle other subject": [cond("c", **SLE, subject="Patient/p2")],
    "sle no subject": [cond("c", **SLE, subject=None)],
    "sle subject identifier only": [cond("c", **SLE, subject={"identifier": {"value": "p1"}})],
    "sle absolute subject": [cond("c", **SLE, subject="http://ehr.example/fhir/Patient/p1")],
    "sle contained in an Observation": [
        syn.quantity("p1", "2160-0", 0.8, "mg/dL", "2026-11-01") | {"id": "o-c", "contained": [cond("c", **SLE)]}
    ],
    "sle coded Observation": [  # a lupus code on an Observation is no diagnosis
        syn.quantity("p1", "2160-0", 0.8, "mg/dL", "2026-11-01")
        | {"id": "o-sle", "code": {"coding": [{"system": SNOMED, "code": "55464009"}]}}
    ],
    "deceased": [syn.patient("p1") | {"deceasedBoolean": True}],
    "deceased with sle": [syn.patient("p1") | {"deceasedDateTime": "2026-01-01"}, cond("c", **SLE)],
    "second patient p1 (duplicate)": [syn.patient("p1", birth="2015-01-01")],
    "second patient p2 with sle": [syn.patient("p2"), cond("c2", **SLE, subject="Patient/p2")],
}


def record(as_of, name: str) -> list[dict]:
    extra = VARIANTS[name]
    base = background(as_of)
    replaces = any(r["resourceType"] == "Patient" and r.get("id") == "p1" for r in extra)
    if replaces and name != "second patient p1 (duplicate)":  # the variant's Patient replaces the chart's
        base = [r for r in base if r["resourceType"] != "Patient"]
    return [*base, *extra]


COMPLETE = {
    "all": set(SOURCES),
    "no conditions": set(SOURCES) - {"Condition"},
    "no labs": set(SOURCES) - {"Observation"},
}


def dump(report) -> list[dict]:
    return [t.model_dump(mode="json") for t in report.trials]


def matcher(catalog) -> Matcher:
    return Matcher(catalog, Gatherer(httpx.AsyncClient(), AllowList()))


# --- 1. the report: statuses, entries, criteria --------------------------------------------------------


@pytest.mark.parametrize("complete", COMPLETE)
@pytest.mark.parametrize("name", VARIANTS)
def test_the_hook_report_is_the_whole_records_on_adversarial_conditions(catalog, as_of, name, complete):
    got = Gathered(resources=record(as_of, name), complete=COMPLETE[complete])
    m = matcher(catalog)
    whole, hook = m.report(got, "p1", as_of), m.report(got, "p1", as_of, whole=False)
    assert dump(hook) == dump(whole), name
    assert hook.patient == whole.patient


def test_the_variants_reach_every_entry_outcome(catalog, as_of):
    """The comparison above means something: the records put the patient in, out and unknown."""
    m, seen = matcher(catalog), set()
    for name in VARIANTS:
        got = Gathered(resources=record(as_of, name), complete=set(SOURCES))
        seen |= {t.cohort.outcome for t in m.report(got, "p1", as_of).trials if t.cohort}
    assert seen == {"in", "out", "unknown"}


def test_conditions_in_nested_bundles_are_read_by_the_shortcut_too(catalog, as_of):
    """A Bundle inside a Bundle inside the list: the entry-only filter walks it as the whole reader does."""
    inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": cond("c", **SLE)}]}
    outer = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": inner}]}
    for res in ([*background(as_of), outer], [{"resourceType": "Bundle", "entry": [{"resource": r}]} for r in
                                             [*background(as_of), outer]]):  # fmt: skip
        got = Gathered(resources=res, complete=set(SOURCES))
        m = matcher(catalog)
        whole = m.report(got, "p1", as_of)
        assert any(t.cohort and t.cohort.outcome == "in" for t in whole.trials)  # the nested lupus counts
        assert dump(m.report(got, "p1", as_of, whole=False)) == dump(whole)


@pytest.mark.parametrize("name", ["nothing", "sle coded", "lupus nephritis only", "health-concern SLE"])
def test_trials_chosen_one_by_one_and_drafts(catalog, as_of, name):
    """A trial chosen by id is answered from its own entry; a catalogue whose other trials are drafts (whose
    entry is never read) and one of drafts only answer as the whole record does."""
    got = Gathered(resources=record(as_of, name), complete=set(SOURCES))
    m = matcher(catalog)
    for tid in catalog.trials:
        assert dump(m.report(got, "p1", as_of, [tid], whole=False)) == dump(m.report(got, "p1", as_of, [tid]))
        drafts = {k: t if k == tid else t.model_copy(update={"draft": True}) for k, t in catalog.trials.items()}
        md = matcher(dataclasses.replace(catalog, trials=drafts))
        assert dump(md.report(got, "p1", as_of, whole=False)) == dump(md.report(got, "p1", as_of))
    every = {k: t.model_copy(update={"draft": True}) for k, t in catalog.trials.items()}
    ma = matcher(dataclasses.replace(catalog, trials=every))
    assert dump(ma.report(got, "p1", as_of, whole=False)) == dump(ma.report(got, "p1", as_of))
    assert {t.status for t in ma.report(got, "p1", as_of, whole=False).trials} <= {"draft"}


def test_a_strict_catalogue_answers_the_same(as_of):
    from cds_service.eligibility.catalog import Catalog

    strict = Catalog.load(ROOT / "mappings", ROOT / "trials", strict=True)
    m = matcher(strict)
    for name in ("nothing", "sle coded", "unknown local code", "sle STU3 clinicalStatus", "health-concern SLE"):
        got = Gathered(resources=record(as_of, name), complete=set(SOURCES))
        assert dump(m.report(got, "p1", as_of, whole=False)) == dump(m.report(got, "p1", as_of)), name


@pytest.mark.parametrize("name", VARIANTS)
def test_the_screen_cohort_first_keeps_the_whole_records_verdicts(catalog, as_of, name):
    res = record(as_of, name)
    whole = catalog.verdicts(catalog.facts(res, "p1"), as_of)
    assert [screen_kept(r) for r in cohort_first(catalog, "p1", res, as_of, None)] == [screen_kept(r) for r in whole]


# --- 2. through HTTP: patient-view, order-sign, order-select --------------------------------------------

RITUXIMAB = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/p1"},
             "medicationCodeableConcept": {"text": "rituximab 500 mg IV"}}  # fmt: skip
DRAFTS = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": RITUXIMAB}]}


def seen(cards: list[dict]) -> list[tuple]:
    """What a clinician reads of each card, in order: summary, detail, indicator, our extension."""
    return [(c["summary"], c["detail"], c["indicator"], c["extension"]) for c in cards]


def whole_answers(catalog, as_of, prefetch: dict) -> tuple[list, list, list]:
    """The cards the whole record gives (patient-view, order-sign, order-select), from what the hook gathers."""
    got = asyncio.run(Gatherer(httpx.AsyncClient(), AllowList()).gather("p1", prefetch, None, None))
    facts = catalog.facts(got.resources, "p1", got.complete)
    report = catalog.report(facts, as_of)
    view = cards_for(catalog.trials, report.trials, got.gaps + report.skipped_resources, None, facts.patient)
    found = impacts(catalog, facts, draft_orders(catalog, DRAFTS, as_of), as_of)
    dump = lambda cards: seen([c.model_dump(mode="json", exclude_none=True) for c in cards])  # noqa: E731
    sign = order_cards(catalog.trials, found, facts.patient, signing=True)
    select = order_cards(catalog.trials, found, facts.patient, signing=False)
    return dump(view), dump(sign), dump(select)


def hook_answers(client, prefetch: dict) -> tuple[list, list, list]:
    def post(service: str, hook: str, **context) -> list:
        body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "prefetch": prefetch,
                "context": {"patientId": "p1", "userId": "Practitioner/1", **context}}  # fmt: skip
        r = client.post(f"/cds-services/{service}", json=body)
        assert r.status_code == 200, r.text[:300]
        return seen(r.json()["cards"])

    return (
        post("trial-matcher", "patient-view"),
        post("trial-order-sign", "order-sign", draftOrders=DRAFTS),
        post("trial-order-select", "order-select", draftOrders=DRAFTS, selections=["MedicationRequest/d1"]),
    )


def prefetches(as_of) -> dict[str, dict]:
    out = {}
    for name in VARIANTS:
        res = [r for r in record(as_of, name) if r["resourceType"] != "Patient" or r["id"] == "p1"]
        pid_patients = [r for r in res if r["resourceType"] == "Patient"]
        pre = prefetch_for(res, "p1")
        pre["patient"] = pid_patients[-1]
        out[name] = pre
    sle_bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": cond("c", **SLE)}]}
    pre = prefetch_for(background(as_of), "p1")
    pre["conditions"]["entry"].append({"resource": sle_bundle, "search": {"mode": "match"}})
    out["sle in a Bundle nested in the conditions prefetch"] = pre
    pre = prefetch_for(background(as_of), "p1")
    pre["observations"]["entry"].append({"resource": cond("c", **SLE)})
    out["sle Condition in the observations prefetch"] = pre
    pre = prefetch_for(background(as_of), "p1")
    pre["conditions"] = cond("c", **SLE)  # a bare resource, not a Bundle
    out["bare sle Condition as the conditions prefetch"] = pre
    pre = prefetch_for(background(as_of), "p1")
    pre["conditions"]["link"] = [{"relation": "next", "url": "http://ehr.example/fhir/Condition?page=2"}]
    out["conditions prefetch cut after its first page"] = pre
    return out


def test_hooks_over_http_answer_as_the_whole_record(tmp_path, as_of, catalog):
    every = prefetches(as_of)
    cards_seen = {"view": False, "order": False}
    with open_service(tmp_path, as_of=as_of) as client:
        for name, prefetch in every.items():
            whole = whole_answers(catalog, as_of, prefetch)
            cards_seen["view"] |= bool(whole[0])
            cards_seen["order"] |= bool(whole[1])
            assert hook_answers(client, prefetch) == whole, name
    assert cards_seen == {"view": True, "order": True}  # the comparison saw cards of both kinds


# --- 3. /match keeps the whole report ---------------------------------------------------------------------


def unreadable_lab() -> dict:
    bad = syn.quantity("p1", "2160-0", 0.8, "mg/dL", "2026-11-01", high=1.1, display="Creatinine")
    bad["valueQuantity"]["value"] = "high"
    return bad | {"id": "bad-obs"}


def test_match_still_reads_the_whole_record_of_a_patient_outside_every_cohort(tmp_path, as_of, catalog):
    res = [*background(as_of), unreadable_lab()]
    got = Gathered(resources=res, complete=set(SOURCES))
    m = matcher(catalog)
    whole = m.report(got, "p1", as_of)
    assert all(t.status in ("ineligible", "draft") for t in whole.trials)  # outside every cohort
    assert "Observation/bad-obs failed FHIR R4 validation" in whole.skipped_resources
    assert m.report(got, "p1", as_of, whole=False).skipped_resources == []  # the shortcut never read it
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in res]}
    with open_service(tmp_path, as_of=as_of) as client:
        r = client.post("/match", json=bundle, params={"as_of": as_of.isoformat()})
        assert r.status_code == 200, r.text[:300]
        body = r.json()
    assert body["skipped_resources"] == whole.skipped_resources
    assert body["trials"] == [t.model_dump(mode="json", exclude_none=True) for t in whole.trials]


# --- 4. a lupus diagnosis the reader cannot read is never 'no diagnosis' (found here, on both paths) --------


@pytest.mark.parametrize("name", ["sle malformed onset", "sle STU3 clinicalStatus"])
def test_an_sle_diagnosis_that_cannot_be_read_is_never_no_diagnosis(catalog, as_of, name):
    got = Gathered(resources=record(as_of, name), complete=set(SOURCES))
    whole = matcher(catalog).report(got, "p1", as_of)
    assert any("Condition/c" in s for s in whole.skipped_resources)  # it was seen, and set aside
    outcomes = {t.cohort.outcome for t in whole.trials if t.cohort}
    assert "out" not in outcomes, outcomes


# --- 5. Settings.store_problem ---------------------------------------------------------------------------

SECRET = "s3cr3t"


def urls(tmp: Path) -> list[str]:
    return [
        f"sqlite:///{tmp}/a.sqlite3",
        f"postgresql://clinic:{SECRET}@db.example.org/cds",
        f"postgres://clinic:{SECRET}@db.example.org/cds",
        f"POSTGRESQL://clinic:{SECRET}@db.example.org/cds",
        f"Postgres://clinic:{SECRET}@db.example.org/cds",
        f" postgresql://clinic:{SECRET}@db.example.org/cds",
        f"\npostgresql://clinic:{SECRET}@db.example.org/cds",
        f"postgresql+psycopg://clinic:{SECRET}@db.example.org/cds",
        f"postgresql:/clinic:{SECRET}@db.example.org/cds",
        f"mysql://clinic:{SECRET}@db/cds\nsecond line {SECRET}",
        f"SQLITE:///{tmp}/b.sqlite3",
        f"sqlite://{tmp}/c.sqlite3?password={SECRET}",
        f"clinic:{SECRET}@db.example.org/cds",
        "",
    ]


def test_store_problem_refuses_exactly_what_the_store_cannot_open_and_never_quotes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "sqlite://" + an absolute path is a relative one: made here, not in the checkout
    for url in urls(tmp_path):
        problem = Settings(auth_required=False, database_url=url).store_problem()
        try:
            open_store(url)
            opens = True
        except ValueError:
            opens = False
        assert (problem is None) == opens, repr(url)
        if problem is not None:
            assert SECRET not in problem and "db.example.org" not in problem, problem
            assert "\n" not in problem and "\r" not in problem
            full = Settings(auth_required=False, database_url=url).serve_problem()
            assert full == problem  # what serve prints: the store's line, first


def test_the_app_factory_refuses_an_odd_scheme_without_the_password(tmp_path):
    from cds_service.api.app import create_app

    for url in (f"POSTGRESQL://clinic:{SECRET}@db/cds", f" postgres://clinic:{SECRET}@db/cds"):
        with pytest.raises(RuntimeError) as e:
            create_app(Settings(auth_required=False, log_level="WARNING", database_url=url))
        assert SECRET not in str(e.value) and "\n" not in str(e.value)


PROBE = """
import json, sys
from cds_service.settings import Settings
try:
    import psycopg  # noqa
    importable = True
except ImportError:
    importable = False
problem = Settings(auth_required=False, database_url=sys.argv[1]).store_problem()
print(json.dumps({"importable": importable, "problem": problem}))
"""


def psycopg_broken() -> dict:
    """psycopg installed but not importable: PSYCOPG_IMPL names an implementation that is absent, as when the
    pure-Python package is installed without psycopg-binary and the machine has no libpq."""
    env = {**os.environ, "PSYCOPG_IMPL": "c"}
    url = f"postgresql://clinic:{SECRET}@db.example.org/cds"
    out = subprocess.run([sys.executable, "-c", PROBE, url], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    return json.loads(out.stdout)


def test_psycopg_can_be_installed_and_not_importable():
    """The precondition of the next test: the package is there, its import fails."""
    got = psycopg_broken()
    assert got["importable"] is False


def test_a_postgresql_url_with_an_unimportable_psycopg_is_refused_before_start():
    got = psycopg_broken()
    assert got["importable"] is False
    assert got["problem"] is not None and SECRET not in got["problem"]
