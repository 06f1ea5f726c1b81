"""Derived variables: age, Cockcroft-Gault creatinine clearance, CKD-EPI 2021 eGFR.

Formulas as in shared/reference/clinical-codes.md section 7. A derived value is
a `LabResult` like any other, dated by its newest input and pointing at the
Observations it came from, so it shows up as evidence.
"""

from __future__ import annotations

from datetime import date

from cds_service.fhir.facts import LabResult, PatientFacts


def age_on(birth: date, on: date) -> int:
    """Whole years completed on `on`."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def cockcroft_gault(age: float, weight_kg: float, scr_mg_dl: float, female: bool) -> float:
    """CrCl [mL/min] = (140 - age) x weight / (72 x SCr) x 0.85 if female (actual body weight)."""
    crcl = (140 - age) * weight_kg / (72 * scr_mg_dl)
    return crcl * 0.85 if female else crcl


def ckd_epi_2021(age: float, scr_mg_dl: float, female: bool) -> float:
    """Race-free CKD-EPI 2021 creatinine equation, mL/min/1.73 m2."""
    kappa = 0.7 if female else 0.9
    alpha = -0.241 if female else -0.302
    ratio = scr_mg_dl / kappa
    egfr = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


def _latest(facts: PatientFacts, var: str, since: date, as_of: date, prelim: bool) -> LabResult | None:
    for r in facts.labs.get(var, ()):
        if r.value is not None and r.when is not None and since <= r.when <= as_of and (prelim or not r.preliminary):
            return r
    return None


def derived_result(
    facts: PatientFacts,
    var: str,
    formula: str,
    since: date,
    as_of: date,
    weight_since: date | None = None,
    prelim: bool = False,
) -> tuple[LabResult | None, list[str]]:
    """Compute `var` from current inputs, or say which inputs are missing. Preliminary inputs count only
    when `prelim` (a newer preliminary creatinine then goes to a person, eligibility/preliminary.py).

    Creatinine must fall in the criterion's window; body weight in its own (weight changes slowly, and a
    weight from two months ago serves a creatinine from last week)."""
    missing: list[str] = []
    scr = _latest(facts, "creatinine", since, as_of, prelim)
    if scr is None:
        missing.append("creatinine")
    if facts.birth_date is None:
        missing.append("birth date")
    if facts.gender not in ("female", "male"):
        missing.append("sex (female/male) for the formula")
    weight = None
    if formula == "cockcroft_gault":
        weight = _latest(facts, "weight", min(since, weight_since or since), as_of, prelim)
        if weight is None:
            missing.append("body weight")
    if missing or scr is None or facts.birth_date is None or scr.when is None or not scr.value or scr.value < 0:
        return None, missing
    age = age_on(facts.birth_date, scr.when)
    female = facts.gender == "female"
    if formula == "cockcroft_gault":
        assert weight is not None and weight.value is not None
        if weight.value <= 0:
            return None, ["body weight"]
        value = cockcroft_gault(age, weight.value, scr.value, female)
        sources: tuple[str, ...] = (scr.resource, weight.resource)
        unit = "mL/min"
    else:
        value = ckd_epi_2021(age, scr.value, female)
        sources = (scr.resource,)
        unit = "mL/min/{1.73_m2}"
    return (
        LabResult(
            variable=var,
            when=scr.when,
            resource=scr.resource,
            value=round(value, 1),
            unit=unit,
            original_value=None,
            original_unit=None,
            derived_from=sources,
        ),
        [],
    )
