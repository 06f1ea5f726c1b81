"""AllergyIntolerance read as a source of its own (clinical audit 2, ../shared/reference/clinical-audit-2.md,
finding NW7: "AllergyIntolerance is never read, although T3 exc-1 names cyclophosphamide, fludarabine and
obinutuzumab"). Each case failed before: the allergy criteria were review-only whatever the record said, and
no prefetch key or search asked for AllergyIntolerance.
"""

from __future__ import annotations

import asyncio
from datetime import date

import httpx
import pytest
from helpers import criterion, evaluate, open_service, plain

from cds_service.fhir.codes import RXNORM, SNOMED
from cds_service.fhir.facts import SOURCES
from cds_service.fhir.gather import Gatherer
from cds_service.fhir.normalize import Normalizer
from cds_service.fhir.queries import QUERIES, SOURCE_LABEL, prefetch_templates, searches
from cds_service.fhir.urls import AllowList
from cds_service.screening.bulk import READ_TYPES

AS_OF = date(2026, 11, 23)  # the `eligible` fixture's date (conftest)
T2, T3 = "NCT07274059", "NCT06010472"
P = "p1"
ALLERGY_KEYS = [k for k, (_, rtype) in QUERIES.items() if rtype == "AllergyIntolerance"]
CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def allergy(
    aid: str,
    text: str | None = None,
    coding: list[dict] | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    **fields,
) -> dict:
    code: dict = {}
    if text is not None:
        code["text"] = text
    if coding:
        code["coding"] = coding
    res: dict = {"resourceType": "AllergyIntolerance", "id": aid, "patient": {"reference": f"Patient/{P}"}}
    if code:
        res["code"] = code
    if clinical is not None:
        res["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    if verification is not None:
        res["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": verification}]}
    return {**res, **fields}


def without_allergy_source(catalog, resources: list[dict]):
    """Facts as a hook that could not read AllergyIntolerance has them (every other source complete)."""
    return catalog.facts(resources, P, gathered=set(SOURCES) - {"AllergyIntolerance"})


def exc(catalog, resources, trial: str = T3, cid: str = "exc-1"):
    return criterion(catalog, resources, trial, cid, AS_OF)


# --- the source: discovery, searches, bulk export ------------------------------------------------------


def test_allergyintolerance_is_a_prefetch_key_a_search_and_a_source():
    assert len(ALLERGY_KEYS) == 1
    key = ALLERGY_KEYS[0]
    assert prefetch_templates()[key] == "AllergyIntolerance?patient={{context.patientId}}&_count=500"
    assert [s.path for s in searches(key, "abc")] == ["AllergyIntolerance?patient=abc&_count=500"]
    assert "AllergyIntolerance" in SOURCES and "AllergyIntolerance" in SOURCE_LABEL
    assert "AllergyIntolerance" in READ_TYPES  # Bulk Data exports ask for it and the screen reads it


def test_discovery_names_the_allergy_prefetch_key(tmp_path):
    with open_service(tmp_path) as client:
        services = client.get("/cds-services").json()["services"]
    matcher = next(s for s in services if s["id"] == "trial-matcher")
    assert matcher["prefetch"][ALLERGY_KEYS[0]].startswith("AllergyIntolerance?patient={{context.patientId}}")


def test_prefetched_allergies_count_as_a_complete_source_and_are_read():
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": allergy("a1", "Cyclophosphamide")}]}
    prefetch = {key: None for key in QUERIES} | {"patient": {"resourceType": "Patient", "id": P}}
    prefetch[ALLERGY_KEYS[0]] = bundle

    async def go():
        async with httpx.AsyncClient() as c:
            return await Gatherer(c, AllowList.parse(""), 5, 1.0).gather(P, prefetch, None, None)

    got = asyncio.run(go())
    assert "AllergyIntolerance" in got.complete
    assert any(r["resourceType"] == "AllergyIntolerance" for r in got.resources)


def test_a_hook_without_the_allergy_key_names_the_source_not_read(tmp_path):
    """Only the keys of the CDS Hooks examples, no fhirServer: the card names allergies as not read."""
    from demo import synthetic as syn

    resources = syn.eligible_patient(date.today())
    prefetch = {
        "patient": next(r for r in resources if r["resourceType"] == "Patient"),
        "conditions": [r for r in resources if r["resourceType"] == "Condition"],
        "observations": [r for r in resources if r["resourceType"] == "Observation"],
        "medications": [r for r in resources if r["resourceType"] == "MedicationStatement"],
    }
    prefetch = {
        k: (
            {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in v]}
            if isinstance(v, list)
            else v
        )
        for k, v in prefetch.items()
    }
    body = {
        "hook": "patient-view",
        "hookInstance": "7f1c1f4e-0000-4000-8000-000000000001",
        "context": {"userId": "Practitioner/1", "patientId": P},
        "prefetch": prefetch,
    }
    with open_service(tmp_path) as client:
        cards = client.post("/cds-services/trial-matcher", json=body).json()["cards"]
    t3 = next(c for c in cards if T3 in c["summary"])
    assert "allergies (AllergyIntolerance) was not prefetched" in plain(t3["detail"])


# --- normalising: substances, statuses, negation ---------------------------------------------------------


def test_substances_map_to_ingredients_by_code_and_by_unnegated_text(catalog):
    facts = catalog.facts(
        [
            allergy("a1", coding=[{"system": RXNORM, "code": "974779"}]),  # obinutuzumab, no text
            allergy("a2", "Fludarabine phosphate"),
            allergy("a3", "No known allergy to cyclophosphamide"),
            allergy("a4", "Penicillin", reaction=[{"substance": {"text": "cyclophosphamide"}}]),
            allergy("a5", "cyclophosphamide allergy ruled out"),
        ],
        P,
    )
    by_id = {a.resource: a for a in facts.allergies}
    assert by_id["AllergyIntolerance/a1"].ingredients == {"obinutuzumab"}
    assert by_id["AllergyIntolerance/a2"].ingredients == {"fludarabine"}
    assert "AllergyIntolerance/a3" not in by_id  # negation first: names nothing, says there is none
    assert by_id["AllergyIntolerance/a4"].ingredients == {"cyclophosphamide"}
    assert by_id["AllergyIntolerance/a5"].ingredients == set()
    assert by_id["AllergyIntolerance/a5"].doubtful == {"cyclophosphamide"}


def test_strict_and_fast_readers_give_the_same_allergy_and_route_facts(catalog):
    recs = [
        allergy("a1", "Cyclophosphamide", category=["medication"], type="allergy", criticality="high"),
        allergy(
            "a2",
            coding=[{"system": RXNORM, "code": "24698"}],
            reaction=[{"severity": "severe", "manifestation": [{"text": "rash"}]}],
        ),
        allergy("a3", "Peanut", category=["food"], clinical="resolved"),
    ]
    fast = Normalizer(catalog.mappings).normalize(recs, P, SOURCES)
    strict = Normalizer(catalog.mappings, strict=True).normalize(recs, P, SOURCES)
    assert fast == strict and len(fast.allergies) == 3 and not fast.skipped


def test_an_allergy_with_elements_of_the_wrong_type_is_skipped_and_reported(catalog):
    res = [allergy("a1", "Cyclophosphamide", category="medication")]
    facts = catalog.facts(res, P)
    assert facts.allergies == [] and facts.skipped
    assert facts.unread.get("AllergyIntolerance") == 1  # so it can never read as "none on record"


def test_t3_exc1_an_invalid_allergy_record_is_unknown_not_none(catalog, eligible):
    r = exc(catalog, [*eligible, allergy("a1", "Cyclophosphamide", category="medication")])
    assert r.outcome == "unknown"


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_and_entered_in_error_allergies_never_count(catalog, eligible, status):
    res = [*eligible, allergy("a1", "Cyclophosphamide", verification=status)]
    assert catalog.facts(res, P).allergies == []
    r = exc(catalog, res)
    assert r.outcome == "review" and not r.flagged  # the standing contraindication review only


@pytest.mark.parametrize(
    "record",
    [
        allergy("nka", coding=[{"system": SNOMED, "code": "716186003"}]),  # No known allergy, code only
        allergy("nkda", coding=[{"system": SNOMED, "code": "409137002", "display": "No known drug allergy"}]),
        allergy("nkda-text", "No known drug allergies"),
        allergy("nkda-abbr", "NKDA"),
    ],
)
def test_no_known_allergy_records_are_no_allergy_and_do_not_block_none_on_record(catalog, eligible, record):
    res = [*eligible, record]
    facts = catalog.facts(res, P)
    assert facts.allergies == [] and not facts.unread.get("AllergyIntolerance")
    assert exc(catalog, res).outcome == "review"  # none recorded: the standing review only
    assert exc(catalog, res, T2).outcome == "review"


# --- T3 exc-1: hypersensitivity to cyclophosphamide, fludarabine, obinutuzumab ---------------------------


def test_t3_exc1_quotes_its_seed_and_names_the_three_drugs(catalog):
    c = next(c for c in catalog.trials[T3].criteria if c.id == "exc-1")
    assert "cyclophosphamide, fludarabine, obinutuzumab" in c.text
    for drug in ("cyclophosphamide", "fludarabine", "obinutuzumab"):
        assert drug in str(c.rule)


@pytest.mark.parametrize(
    "record",
    [
        allergy("a1", "Cyclophosphamide", category=["medication"], type="allergy"),
        allergy("a2", coding=[{"system": RXNORM, "code": "3002", "display": "cyclophosphamide"}], type="allergy"),
        allergy("a3", coding=[{"system": RXNORM, "code": "24698"}], type="allergy"),  # fludarabine by RxNorm
        allergy("a4", "Obinutuzumab allergy", type="allergy"),
    ],
)
def test_t3_exc1_a_current_allergy_to_a_trial_drug_fails(catalog, eligible, record):
    """Before: review whatever the record said. Now: fail, with the allergy as evidence."""
    res = [*eligible, record]
    r = exc(catalog, res)
    assert r.outcome == "fail"
    assert any(e.resource == f"AllergyIntolerance/{record['id']}" for e in r.evidence)
    assert evaluate(catalog, res, T3, AS_OF).status == "ineligible"


def test_t3_exc1_none_recorded_keeps_the_standing_review_and_likely_stays_likely(catalog, eligible):
    r = exc(catalog, eligible)
    assert r.outcome == "review" and not r.flagged
    assert any("contraindication" in x for x in r.review)
    assert evaluate(catalog, eligible, T3, AS_OF).status == "likely-eligible"


def test_t3_exc1_allergy_source_not_read_is_unknown(catalog, eligible):
    facts = without_allergy_source(catalog, eligible)
    c = next(c for c in catalog.trials[T3].criteria if c.id == "exc-1")
    r = catalog.engine.criterion(facts, c, AS_OF)
    assert r.outcome == "unknown"
    assert any("allergies (AllergyIntolerance) not read" in m for m in r.missing)


def test_t3_exc1_a_recorded_allergy_counts_even_when_the_source_was_not_read_completely(catalog, eligible):
    facts = without_allergy_source(catalog, [*eligible, allergy("a1", "Cyclophosphamide", type="allergy")])
    c = next(c for c in catalog.trials[T3].criteria if c.id == "exc-1")
    assert catalog.engine.criterion(facts, c, AS_OF).outcome == "fail"


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (allergy("a1", "Cyclophosphamide", verification="unconfirmed"), "unconfirmed"),
        (allergy("a2", "Cyclophosphamide", type="intolerance"), "intolerance"),
        (allergy("a3", "Cyclophosphamide", clinical=None), "clinical status not recorded"),
        (allergy("a4", "cyclophosphamide allergy ruled out"), "negation"),
        # fresh-eyes review: words after the name, a missing type or verification never make a definite fail
        (allergy("a5", "Cyclophosphamide: none", type="allergy"), "negation"),
        (allergy("a6", "Possible fludarabine allergy", type="allergy"), "negation"),
        (allergy("a7", "Cyclophosphamide - side effect, not allergy", type="allergy"), "negation"),
        (allergy("a8", "Obinutuzumab (infusion reaction)", type="allergy"), "negation"),
        (allergy("a9", "Cyclophosphamide", reaction=[{"manifestation": [{"text": "Nausea"}]}]), "not recorded as"),
        (allergy("a10", "Cyclophosphamide", type="allergy", verification=None), "verification status"),
    ],
)
def test_t3_exc1_an_unsure_record_goes_to_a_person_never_fails(catalog, eligible, record, why):
    r = exc(catalog, [*eligible, record])
    assert r.outcome == "review" and r.flagged
    assert any(why in x for x in r.review)


def test_t3_exc1_a_resolved_allergy_is_not_current_but_its_history_goes_to_a_person(catalog, eligible):
    """Resolved: not a current hypersensitivity (no fail); the seed's "history of severe allergic reactions"
    still asks a person whether it was severe."""
    r = exc(catalog, [*eligible, allergy("a1", "Cyclophosphamide", clinical="resolved")])
    assert r.outcome == "review" and r.flagged
    mild = allergy("a2", "Cyclophosphamide", clinical="resolved", criticality="low")
    r = exc(catalog, [*eligible, mild])
    assert r.outcome == "review" and not r.flagged  # recorded as not severe: the standing review only


def test_t3_exc1_a_severe_reaction_to_anything_else_goes_to_a_person(catalog, eligible):
    peanut = allergy("a1", "Peanut", category=["food"], criticality="high")
    r = exc(catalog, [*eligible, peanut])
    assert r.outcome == "review" and r.flagged
    mild = allergy("a2", "Peanut", category=["food"], reaction=[{"severity": "mild"}])
    assert not exc(catalog, [*eligible, mild]).flagged


def test_t3_exc1_an_unrecognised_status_is_unknown(catalog, eligible):
    r = exc(catalog, [*eligible, allergy("a1", "Cyclophosphamide", clinical="dormant")])
    assert r.outcome == "unknown" and any("not recognised" in m for m in r.missing)


def test_t3_exc1_an_allergy_whose_substance_cannot_be_read_blocks_none_on_record(catalog, eligible):
    """A SNOMED CT substance code alone (not mapped) might be one of the trial drugs: unknown, not pass."""
    coded_only = allergy("a1", coding=[{"system": SNOMED, "code": "387420009"}])
    facts = catalog.facts([*eligible, coded_only], P)
    assert facts.unread.get("AllergyIntolerance") == 1
    r = exc(catalog, [*eligible, coded_only])
    assert r.outcome == "unknown" and any("could not be identified" in m for m in r.missing)


# --- T2 exc-1: history of severe drug allergies -----------------------------------------------------------


def test_t2_exc1_a_drug_allergy_not_recorded_as_mild_goes_to_a_person(catalog, eligible):
    pen = allergy("a1", "Penicillin", category=["medication"], reaction=[{"severity": "severe"}])
    r = exc(catalog, [*eligible, pen], T2)
    assert r.outcome == "review" and r.flagged
    assert evaluate(catalog, [*eligible, pen], T2, AS_OF).status != "likely-eligible"


def test_t2_exc1_mild_drug_or_food_allergies_keep_the_standing_review(catalog, eligible):
    mild = allergy("a1", "Penicillin", category=["medication"], criticality="low")
    food = allergy("a2", "Shellfish", category=["food"], criticality="high")
    r = exc(catalog, [*eligible, mild, food], T2)
    assert r.outcome == "review" and not r.flagged
    assert any("atopic" in x for x in r.review)


def test_t2_exc1_allergy_source_not_read_is_unknown(catalog, eligible):
    facts = without_allergy_source(catalog, eligible)
    c = next(c for c in catalog.trials[T2].criteria if c.id == "exc-1")
    assert catalog.engine.criterion(facts, c, AS_OF).outcome == "unknown"


# --- T1 exc-6: other autoimmune diseases (same finding, NW7) ---------------------------------------------

T1 = "NCT06902844"


def condition(icd: str | None = None, snomed: str | None = None, text: str | None = None, cid: str = "c1") -> dict:
    coding = [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd}] if icd else []
    coding += [{"system": SNOMED, "code": snomed}] if snomed else []
    code: dict = {"coding": coding} if coding else {}
    if text:
        code["text"] = text
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{P}"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": code,
    }


@pytest.mark.parametrize(
    "record",
    [
        condition("M06.9"),  # rheumatoid arthritis, unspecified
        condition("M05.79"),  # RA with rheumatoid factor, multiple sites
        condition(snomed="83901003"),  # Sjogren's syndrome
        condition("M35.00"),
        condition("D68.61"),  # antiphospholipid syndrome
        condition(snomed="26843008"),
        condition("M34.9"),  # systemic sclerosis
        condition(text="Sjögren's syndrome"),  # free text only
    ],
)
def test_t1_exc6_another_autoimmune_disease_on_record_goes_to_a_person(catalog, eligible, record):
    """Before: the same standing review with or without RA, Sjogren or APS on record. Now the record raises it."""
    r = exc(catalog, [*eligible, record], T1, "exc-6")
    assert r.outcome == "review" and r.flagged
    assert any(e.resource == "Condition/c1" for e in r.evidence)


def test_t1_exc6_none_on_record_keeps_the_standing_review(catalog, eligible):
    r = exc(catalog, eligible, T1, "exc-6")
    assert r.outcome == "review" and not r.flagged
    negated = condition(text="no Sjogren syndrome")
    assert not exc(catalog, [*eligible, negated], T1, "exc-6").flagged
    assert not exc(catalog, [*eligible, condition("M06.4")], T1, "exc-6").flagged  # inflammatory polyarthropathy


# --- T1 exc-16: severe hepatic insufficiency (same finding, NW7: "cirrhosis codes could be flagged") -------


@pytest.mark.parametrize(
    "record",
    [
        condition("K74.60"),  # unspecified cirrhosis of liver
        condition("K70.30"),  # alcoholic cirrhosis
        condition("K72.10"),  # chronic hepatic failure (end-stage liver disease)
        condition(snomed="19943007"),
        condition(text="Liver cirrhosis, Child-Pugh B"),
    ],
)
def test_t1_exc16_cirrhosis_or_hepatic_failure_on_record_goes_to_a_person(catalog, eligible, record):
    r = exc(catalog, [*eligible, record], T1, "exc-16")
    assert r.outcome == "review" and r.flagged


def test_t1_exc16_none_or_resolved_keeps_the_standing_review(catalog, eligible):
    assert not exc(catalog, eligible, T1, "exc-16").flagged
    resolved = condition("K72.00")  # acute hepatic failure, resolved
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    r = exc(catalog, [*eligible, resolved], T1, "exc-16")
    assert r.outcome == "review" and not r.flagged


# --- T3 exc-2: intravenous antibiotics within one week (same finding, NW7; W13c) ---------------------------

ROUTE = {"system": SNOMED, "code": "47625008", "display": "Intravenous route"}
ORAL = {"system": SNOMED, "code": "26643006", "display": "Oral route"}


def administration(mid: str, drug: str, days_ago: int, route: dict | None = ROUTE, atc: str | None = None) -> dict:
    code: dict = {"text": drug}
    if atc:
        code = {"coding": [{"system": "http://www.whocc.no/atc", "code": atc}]}
    res: dict = {
        "resourceType": "MedicationAdministration",
        "id": mid,
        "status": "completed",
        "subject": {"reference": f"Patient/{P}"},
        "medicationCodeableConcept": code,
        "effectiveDateTime": date.fromordinal(AS_OF.toordinal() - days_ago).isoformat(),
    }
    if route is not None:
        res["dosage"] = {"route": {"coding": [route]}}
    return res


def test_t3_exc2_iv_ceftriaxone_three_days_ago_excludes_until_a_week_after(catalog, eligible):
    """W13c: IV ceftriaxone 3 days ago -> T3 exc-2 was review, the same as for a patient with none."""
    res = [*eligible, administration("ma1", "cefTRIAXone 1 g in 50 mL", 3)]
    r = exc(catalog, res, T3, "exc-2")
    assert r.outcome == "fail" and r.until is not None and r.until > AS_OF
    result = evaluate(catalog, res, T3, AS_OF)
    assert result.status == "possibly-eligible" and result.eligible_from == r.until


def test_t3_exc2_an_antibacterial_coded_only_in_atc_j01_counts(catalog, eligible):
    r = exc(catalog, [*eligible, administration("ma1", "", 2, atc="J01XA01")], T3, "exc-2")
    assert r.outcome == "fail"


def test_t3_exc2_oral_or_older_courses_keep_the_standing_review(catalog, eligible):
    oral = administration("ma1", "ciprofloxacin 500 mg", 2, route=ORAL)
    old = administration("ma2", "ceftriaxone", 10)
    r = exc(catalog, [*eligible, oral, old], T3, "exc-2")
    assert r.outcome == "review" and not r.flagged
    assert not exc(catalog, eligible, T3, "exc-2").flagged


@pytest.mark.parametrize(
    "route", [None, {"system": "urn:oid:local", "code": "X9"}], ids=["not recorded", "unrecognised"]
)
def test_t3_exc2_a_recent_antibiotic_of_unknown_route_goes_to_a_person(catalog, eligible, route):
    r = exc(catalog, [*eligible, administration("ma1", "vancomycin", 2, route=route)], T3, "exc-2")
    assert r.outcome == "review" and r.flagged
    assert any("route not" in x for x in r.review)


def test_t3_exc2_iv_antibiotic_source_not_read_is_unknown(catalog, eligible):
    facts = catalog.facts(eligible, P, gathered={"Condition", "Observation"})
    c = next(c for c in catalog.trials[T3].criteria if c.id == "exc-2")
    assert catalog.engine.criterion(facts, c, AS_OF).outcome == "unknown"
