"""Units are converted, never assumed: a value in any accepted unit gives the same outcome."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from helpers import criterion, drop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
D5 = AS_OF - timedelta(days=5)

# (trial, criterion, LOINC codes to replace, [(code, unit, factor from canonical to this unit)], canonical range)
CASES = [
    (
        "NCT06902844",
        "exc-12",
        ["718-7"],
        [("718-7", "g/L", 1), ("718-7", "g/dL", 0.1), ("59260-0", "mmol/L", 1 / 16.1)],
        (30, 200),
    ),
    (
        "NCT06801119",
        "inc-7.1",
        ["751-8"],
        [("751-8", "10*9/L", 1), ("751-8", "10*3/uL", 1), ("751-8", "/uL", 1000), ("26499-4", "10^9/L", 1)],
        (0.1, 10),
    ),
    ("NCT06801119", "inc-7.5", ["1975-2"], [("1975-2", "mg/dL", 1), ("14631-6", "umol/L", 1 / 0.05847)], (0.1, 6)),
    (
        "NCT06801119",
        "inc-5",
        ["4485-9", "4498-2", "5048-4", "5130-0"],
        [("4485-9", "g/L", 1), ("4485-9", "mg/dL", 100), ("4485-9", "mg/L", 1000)],
        (0.2, 2.5),
    ),
    ("NCT06676631", "inc-7.4", ["2160-0"], [("2160-0", "mg/dL", 1), ("14682-9", "umol/L", 1 / 0.01131)], (0.3, 8)),
    ("NCT07274059", "inc-5.6", ["2160-0"], [("2160-0", "mg/dL", 1), ("14682-9", "umol/L", 1 / 0.01131)], (0.3, 8)),
]


def _thresholds_near(value: float) -> bool:
    """Skip values within rounding of a threshold used by these criteria (outcome legitimately flips)."""
    known = [60, 80, 1.0, 1.5, 2.0, 3.0, 0.9]
    return any(abs(value - t) < 1e-6 * max(1, t) for t in known)


@pytest.mark.parametrize(("trial", "cid", "replaced", "units", "bounds"), CASES, ids=lambda c: str(c)[:20])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_same_value_in_any_accepted_unit_same_outcome(catalog, trial, cid, replaced, units, bounds, data):
    canonical = data.draw(st.floats(min_value=bounds[0], max_value=bounds[1], allow_nan=False), label="canonical")
    if _thresholds_near(canonical):
        return
    base = drop(syn.eligible_patient(AS_OF), *replaced)
    outcomes = set()
    for code, unit, factor in units:
        obs = syn.quantity("p1", code, canonical * factor, unit, D5)
        c = criterion(catalog, [*base, obs], trial, cid, AS_OF)
        outcomes.add(c.outcome)
    assert len(outcomes) == 1, outcomes


def test_unaccepted_unit_is_never_assumed(catalog):
    """Hemoglobin 11 in an unknown unit is not read as g/dL (or anything): it is missing, and named."""
    base = drop(syn.eligible_patient(AS_OF), "718-7")
    odd = syn.quantity("p1", "718-7", 11, "g/mL/h", D5)
    c = criterion(catalog, [*base, odd], "NCT06010472", "inc-10", AS_OF)
    assert c.outcome == "unknown"
    assert any("g/mL/h" in m and "not an accepted unit" in m for m in c.missing)


def test_unitless_value_is_not_assumed_for_a_unit_bearing_variable(catalog):
    base = drop(syn.eligible_patient(AS_OF), "751-8")
    obs = syn.quantity("p1", "751-8", 2.0, "10*9/L", D5)
    del obs["valueQuantity"]["unit"], obs["valueQuantity"]["code"]
    c = criterion(catalog, [*base, obs], "NCT06010472", "inc-10", AS_OF)
    assert c.outcome == "unknown"


def test_evidence_keeps_original_value_and_unit(catalog):
    c = criterion(catalog, syn.eligible_patient(AS_OF), "NCT06010472", "inc-10", AS_OF)
    hb = next(e for e in c.evidence if e.label == "Hemoglobin")
    assert (hb.value, hb.unit, hb.original_value, hb.original_unit) == (118.0, "g/L", "11.8", "g/dL")
    assert hb.resource.startswith("Observation/") and hb.date is not None
