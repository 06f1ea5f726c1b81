"""Hypothesis throws junk FHIR at normalization and evaluation: nothing may crash."""

from __future__ import annotations

from datetime import date

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
