"""The fast reader and the strict (fhir.resources R4B-validated) reader give the same facts on valid FHIR."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.fhir.normalize import Normalizer
from demo import synthetic as syn
from demo.load import demo_bundles, resources

KINDS = {"Observation", "Condition", "Medication"}


def both(catalog, res: list[dict], pid: str):
    fast = Normalizer(catalog.mappings).normalize(res, pid, KINDS)
    strict = Normalizer(catalog.mappings, strict=True).normalize(res, pid, KINDS)
    return fast, strict


@pytest.mark.parametrize("patient", ["demo-amara", "demo-bruno", "demo-chen", "demo-dana", "demo-eli", "demo-fiona"])
def test_demo_patients_read_identically(catalog, patient):
    fast, strict = both(catalog, resources(demo_bundles(date(2026, 11, 23))[patient]), patient)
    assert fast == strict
    assert fast.labs and fast.conditions and fast.medications and not fast.skipped


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.floats(0.01, 1e5, allow_nan=False),
    unit=st.sampled_from(["g/dL", "g/L", "mmol/L", "10*3/uL", "/uL", "mg/dL", "umol/L", "weird"]),
    code=st.sampled_from(["718-7", "751-8", "2160-0", "14682-9", "1742-6", "5130-0"]),
    status=st.sampled_from(["final", "amended", "preliminary", "entered-in-error"]),
    high=st.one_of(st.none(), st.floats(0.1, 1e4, allow_nan=False)),
    comparator=st.sampled_from([None, "<", ">"]),
)
def test_generated_valid_observations_read_identically(catalog, value, unit, code, status, high, comparator):
    obs = syn.quantity("p1", code, value, unit, date(2026, 11, 1), high=high, comparator=comparator, status=status)
    fast, strict = both(catalog, [syn.patient("p1"), obs], "p1")
    assert fast == strict


def test_strict_mode_rejects_what_fast_mode_does_not_read(catalog):
    """An invalid element the criteria never read: strict skips the resource, fast reads it."""
    obs = syn.quantity("p1", "718-7", 12, "g/dL", date(2026, 11, 1))
    obs["category"] = "not-a-list"
    fast, strict = both(catalog, [syn.patient("p1"), obs], "p1")
    assert fast.labs["hemoglobin"][0].value == 120
    assert "hemoglobin" not in strict.labs and strict.skipped


def test_invalid_read_elements_are_skipped_in_both_modes(catalog):
    obs = syn.quantity("p1", "718-7", 12, "g/dL", date(2026, 11, 1))
    obs["valueQuantity"]["value"] = "12"  # a string where FHIR has a decimal
    fast, strict = both(catalog, [syn.patient("p1"), obs], "p1")
    assert "hemoglobin" not in fast.labs and "hemoglobin" not in strict.labs
    assert fast.skipped == strict.skipped == [f"Observation/{obs['id']} failed FHIR R4 validation"]
