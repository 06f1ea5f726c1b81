"""Hypothesis throws junk FHIR at normalization and evaluation: nothing may crash."""

from __future__ import annotations

import copy
import json
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
TYPES = [
    "Patient",
    "Observation",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "Immunization",
    "Medication",
    "OperationOutcome",
    "Bundle",
    "Banana",
]
KEYS = [
    "status",
    "code",
    "valueQuantity",
    "valueString",
    "valueCodeableConcept",
    "valueRatio",
    "component",
    "effectiveDateTime",
    "effectivePeriod",
    "subject",
    "clinicalStatus",
    "verificationStatus",
    "onsetDateTime",
    "abatementDateTime",
    "medicationCodeableConcept",
    "medicationReference",
    "dosage",
    "dosageInstruction",
    "birthDate",
    "gender",
    "interpretation",
    "referenceRange",
    "entry",
    "id",
    "vaccineCode",
    "occurrenceDateTime",
    "authoredOn",
    "dispenseRequest",
    "coding",
    "system",
    "value",
    "unit",
    "comparator",
    "timing",
    "doseAndRate",
]
# Values near real ones are the interesting junk: real codes, real systems, wrong shapes.
ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "751-8",
            "http://loinc.org",
            "10*3/uL",
            "final",
            "active",
            "2026-13-45",
            "2026-11-01",
            "1:160",
            "http://snomed.info/sct",
            "55464009",
            "8640",
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "<",
            "positive",
            "mg",
            "d",
            "P1D",
            "Patient/p1",
            "#med",
            "A",
        ]
    ),
)
JSON = st.recursive(
    ATOMS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=30,
)
RESOURCE = st.builds(
    lambda t, body, rid: {**body, "resourceType": t, "id": rid},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8),
    st.one_of(st.text(max_size=8), st.integers()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RESOURCE, max_size=12))
def test_junk_resources_never_crash(catalog_session, resources):
    facts = catalog_session.facts([syn.patient("p1"), *resources], "p1")
    report = catalog_session.report(facts, AS_OF)
    assert len(report.trials) == len(catalog_session.trials)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        ["valueQuantity", "valueString", "valueCodeableConcept", "valueRatio", "valueInteger", "valueBoolean"]
    ),
    JSON,
    st.sampled_from(["751-8", "5048-4", "5196-1", "718-7", "2160-0"]),
)
def test_observations_with_any_value_shape(catalog_session, key, value, code):
    obs = syn.quantity("p1", code, 1, "mg/dL", AS_OF)
    del obs["valueQuantity"]
    obs[key] = value
    facts = catalog_session.facts([syn.patient("p1"), obs], "p1")
    catalog_session.report(facts, AS_OF)


# --- one element of a well-formed record broken -----------------------------------------------------------
# Junk built from nothing rarely reaches the deep elements a reader does arithmetic on (a supply's days, a
# refill count); a real record with one of them replaced does. Extremes included: 1e12 days of supply once
# raised OverflowError out of the reader, which failed the hook and stopped a whole screen.
EXTREMES = st.one_of(
    ATOMS,
    st.sampled_from([10**30, -(10**30), 2**63, 1e300, -1e300, 1e12, -5, 0, "9999-12-31", "0001-01-01", [None], {}]),
)
MMF = "68149"  # mycophenolate mofetil (RxNorm ingredient)


def _rich_record() -> list[dict]:
    """An eligible lupus record with every medication source and the supply elements a reader computes with."""
    mr = syn.med_request("p1", MMF, "mycophenolate mofetil 500 MG", "2026-08-01", dose_mg=500, supply_days=30)
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 3
    mr["dispenseRequest"]["validityPeriod"] = {"start": "2026-08-01"}
    dispense = {"resourceType": "MedicationDispense", "id": "md1", "status": "completed",
                "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "rituximab"},
                "whenHandedOver": "2026-06-01", "daysSupply": {"value": 30, "unit": "d", "code": "d"}}  # fmt: skip
    given_ = {"resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
              "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "cyclophosphamide"},
              "effectivePeriod": {"start": "2026-05-01", "end": "2026-05-02"}}  # fmt: skip
    return [*syn.eligible_patient(AS_OF), mr, dispense, given_]


def _paths(node: object, path: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return []
    return [p for k, v in items for p in ((*path, k), *_paths(v, (*path, k)))]


def _broken(record: list[dict], choice: int, value: object) -> list[dict]:
    record = copy.deepcopy(record)
    paths = [p for p in _paths(record) if len(p) > 1 and p[1:] != ("resourceType",)]
    *parent, last = paths[choice % len(paths)]
    node: Any = record
    for key in parent:
        node = node[key]
    node[last] = copy.deepcopy(value)
    return record


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), EXTREMES), min_size=1, max_size=3))
def test_a_real_record_with_elements_broken_never_crashes(catalog_session, breaks):
    record = _rich_record()
    for choice, value in breaks:
        record = _broken(record, choice, value)
    facts = catalog_session.facts(record, "p1")
    assert len(catalog_session.report(facts, AS_OF).trials) == len(catalog_session.trials)
    catalog_session.verdicts(facts, AS_OF)


@pytest.mark.parametrize(
    ("element", "value"),
    [
        (("daysSupply", "value"), 1e12),  # beyond any calendar
        (("daysSupply", "value"), -5),  # a negative supply is not one
    ],
)
def test_a_dispense_whose_supply_no_calendar_holds_is_set_aside_not_a_crash(catalog_session, element, value):
    record = _rich_record()
    record[-2][element[0]][element[1]] = value
    facts = catalog_session.facts(record, "p1")
    assert facts.skipped == ["MedicationDispense/md1 failed FHIR R4 validation"]
    assert facts.unread == {"MedicationDispense": 1}  # no "none on record" from the dispenses now
    assert "mycophenolate_mofetil" in {m.ingredient for m in facts.medications}  # the rest of the record still counts


@pytest.mark.parametrize(("element", "value"), [("numberOfRepeatsAllowed", 2**63), ("numberOfRepeatsAllowed", 10**400)])
def test_a_request_whose_refills_no_calendar_holds_is_set_aside_not_a_crash(catalog_session, element, value):
    record = _rich_record()
    request = next(r for r in record if r["resourceType"] == "MedicationRequest" and "dispenseRequest" in r)
    request["dispenseRequest"][element] = value
    del request["dispenseRequest"]["validityPeriod"]  # the course's end comes from the supply and refills
    facts = catalog_session.facts(record, "p1")
    assert facts.skipped == [f"MedicationRequest/{request['id']} failed FHIR R4 validation"]
    catalog_session.report(facts, AS_OF)


@pytest.mark.parametrize("element", ["valueInteger", "valueQuantity"])
def test_a_number_no_float_holds_is_set_aside_not_a_crash(catalog_session, element):
    """`json` (the CLI's `evaluate`, a FHIR client's library) reads 10**400 as an int; float() of it raised
    OverflowError out of the reader. A FHIR integer is 32-bit; a decimal no float holds is not readable."""
    obs = syn.quantity("p1", "718-7", 12, "g/dL", AS_OF)  # haemoglobin
    del obs["valueQuantity"]
    obs[element] = json.loads("1" + "0" * 400) if element == "valueInteger" else {"value": json.loads("9" * 400)}
    facts = catalog_session.facts([syn.patient("p1"), obs], "p1")
    assert facts.skipped == [f"Observation/{obs['id']} failed FHIR R4 validation"]
    assert facts.unread == {"Observation": 1}
