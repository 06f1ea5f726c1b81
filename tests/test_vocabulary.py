"""Vocabulary a new trial needs: weight-based doses, strict durations, distinct drugs, named predicates,
tuberculosis, CD19-directed therapies, serum IgA. Each through a small trial of its own."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cds_service.eligibility.rules import RuleError
from cds_service.eligibility.trials import Trial
from demo import synthetic as syn

AS_OF = date(2026, 11, 23)


def d(n: int) -> date:
    return AS_OF - timedelta(days=n)


def outcome(catalog, resources: list[dict], rule: dict, kind: str = "exclusion") -> str:
    trial = Trial.model_validate(
        {
            "id": "NCT00000009",
            "title": "t",
            "sponsor": "s",
            "phase": "1",
            "status": "Recruiting",
            "url": "https://clinicaltrials.gov/study/NCT00000009",
            "sites": [],
            "source": "test",
            "entry": {"groups": ["sle"], "text": "quoted text"},
            "criteria": [{"id": "c1", "type": kind, "text": "quoted text", "rule": rule}],
        }
    ).compile(catalog.mappings)
    # the rule alone, whatever the cohort entry (these resources need not hold a diagnosis)
    return catalog.engine.criterion(catalog.facts(resources, "p1"), trial.criteria[0], AS_OF).outcome


def base() -> list[dict]:
    return [r for r in syn.eligible_patient(AS_OF) if r["resourceType"] in ("Patient", "Condition", "Observation")]


def test_weight_based_dose(catalog):
    rule = {
        "medication": {
            "ingredients": ["cyclophosphamide"],
            "within": "3 months",
            "dose": {"op": ">", "value": 10, "per_kg": True},
        }
    }
    cyc = syn.med_statement("p1", "3002", "cyclophosphamide", d(40), d(30), status="completed", dose_mg=1000)
    # 1000 mg/day for a 64 kg patient is 15.6 mg/kg/day: above 10
    assert outcome(catalog, [*base(), cyc], rule) == "fail"
    light = [r for r in base() if "29463-7" not in str(r.get("code"))] + [
        syn.quantity("p1", "29463-7", 120, "kg", d(5))
    ]
    assert outcome(catalog, [*light, cyc], rule) == "pass"  # 8.3 mg/kg/day
    no_weight = [r for r in base() if "29463-7" not in str(r.get("code"))]
    assert outcome(catalog, [*no_weight, cyc], rule) == "unknown"


def test_strict_durations(catalog):
    rule = {"condition": {"groups": ["sle"], "onset_before": "more than 6 months"}}
    exactly = [r for r in base() if r["resourceType"] != "Condition"] + [
        syn.condition("p1", icd="M32.9", display="SLE", onset=AS_OF.replace(month=AS_OF.month - 6))
    ]
    assert outcome(catalog, exactly, rule, "inclusion") == "fail"
    assert (
        outcome(catalog, exactly, {"condition": {"groups": ["sle"], "onset_before": "6 months"}}, "inclusion") == "pass"
    )
    assert outcome(catalog, base(), rule, "inclusion") == "pass"  # diagnosed 5 years ago


def test_named_predicate_and_its_errors(catalog):
    rule = {"predicate": "active_hepatitis_b"}
    viraemic = [*base(), syn.qualitative("p1", "5196-1", True, d(1)), syn.qualitative("p1", "29610-3", True, d(1))]
    assert outcome(catalog, viraemic, rule) == "fail"
    cleared = [*base(), syn.qualitative("p1", "5196-1", True, d(1)), syn.qualitative("p1", "29610-3", False, d(1))]
    assert outcome(catalog, cleared, rule) == "pass"
    with pytest.raises(RuleError, match="did you mean 'active_hepatitis_b'"):
        outcome(catalog, base(), {"predicate": "active_hepatitis_c_b"})


def test_tuberculosis_cd19_and_iga(catalog):
    tb = syn.condition("p1", icd="Z22.7", display="Latent tuberculosis")
    assert outcome(catalog, [*base(), tb], {"predicate": "active_or_latent_tuberculosis"}) == "fail"
    blina = syn.med_statement("p1", "0", "blinatumomab", d(900), d(880), status="completed")
    assert outcome(catalog, [*base(), blina], {"medication": {"classes": ["cd19_directed"]}}) == "fail"
    iga = syn.quantity("p1", "2458-8", 0.5, "g/L", d(3), low=0.7, high=4.0)  # 50 mg/dL, below its LLN
    rule = {"lab": {"var": "iga", "op": "<", "lln": 1}}
    assert outcome(catalog, [*base(), iga], rule) == "fail"
    assert outcome(catalog, base(), rule) == "unknown"
