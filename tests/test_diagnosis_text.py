"""A diagnosis in words is read as a clinician means it: negated after the phrase ("SLE ruled out"), another
person's ("family history of SLE"), or not yet made ("suspected SLE"). Only the patient's own diagnosis opens a
trial's cohort; a suspected one opens it, but no trial is then likely (a person confirms the diagnosis)."""

from __future__ import annotations

import copy
from datetime import date

import pytest

from demo.load import demo_bundles

AS_OF = date(2026, 11, 23)
SLE = {"system": "http://snomed.info/sct", "code": "55464009", "display": "Systemic lupus erythematosus"}
DENIED = [
    "no SLE", "r/o SLE", "SLE ruled out", "SLE - ruled out", "SLE excluded", "SLE (excluded)",
    "SLE: negative workup", "SLE not confirmed", "Family history of SLE", "FH SLE", "mother has SLE",
    "sister with SLE", "Family history: SLE", "FHx: SLE", "SLE workup: negative", "SLE work-up was normal",
    "SLE in her mother", "SLE was ruled out",
]  # fmt: skip
# another disease named after SLE (undifferentiated connective tissue disease): no SLE in the text alone
OTHER_DISEASE = ["Undifferentiated connective tissue disease (SLE-like)", "lupus-like syndrome", "SLE like illness"]
DOUBTFUL = [
    "suspected SLE", "? SLE", "possible SLE", "Evaluate for SLE", "SLE vs RA", "SLE?",
    "ANA positive - SLE workup pending", "SLE workup neg for nephritis", "SLE workup: ANA positive, low C3",
]  # fmt: skip
PRESENT = [
    "SLE", "Systemic lupus erythematosus", "SLE with negative anti-dsDNA", "SLE without nephritis",
    "History of SLE", "SLE, mother has RA", "Seronegative SLE", "SLE on hydroxychloroquine or mycophenolate",
    "SLE - renal biopsy pending", "SLE with lupus-like rash", "SLE likely class IV nephritis",
    # a cue right after SLE about something else: the patient's own SLE stands
    "SLE (nephritis ruled out)", "SLE - APS unlikely", "SLE dx 2015 - nephritis excluded by biopsy",
    "SLE - mother has RA", "SLE like her mother",
]  # fmt: skip


def _record(text: str, coded: bool) -> dict:
    """demo-amara with her SLE Condition written as `text` (and, when `coded`, still coded as SLE)."""
    bundle = copy.deepcopy(demo_bundles(AS_OF)["demo-amara"])
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Condition" and any(c.get("code") == SLE["code"] for c in r["code"]["coding"]):
            r["code"] = {"coding": [SLE], "text": text} if coded else {"text": text}
    return bundle


def _statuses(catalog, text: str, coded: bool = False) -> dict[str, str]:
    report = catalog.report(catalog.facts(_record(text, coded)), AS_OF)
    return {t.id: t.status for t in report.trials}


@pytest.mark.parametrize("coded", [False, True], ids=["text only", "coded SLE"])
@pytest.mark.parametrize("text", DENIED)
def test_a_negated_or_another_persons_diagnosis_opens_no_cohort(catalog, text, coded):
    statuses = _statuses(catalog, text, coded)
    assert set(statuses.values()) <= {"ineligible", "draft"}, (text, statuses)


@pytest.mark.parametrize("text", OTHER_DISEASE)
def test_a_disease_only_like_sle_gets_no_card(catalog, text):
    """Outside (the text names SLE only as a likeness) or not assessed (it names nothing the maps know)."""
    statuses = _statuses(catalog, text)
    assert set(statuses.values()) <= {"ineligible", "not-assessed", "draft"}, (text, statuses)


@pytest.mark.parametrize("text", ["SLE-like flare", "SLE like illness"])
def test_coded_sle_whose_text_says_like_is_a_diagnosis_not_yet_made(catalog, text):
    """The code says SLE, its own text a likeness: neither a definite diagnosis nor a definite "out"."""
    statuses = _statuses(catalog, text, coded=True)
    assert "likely-eligible" not in statuses.values(), (text, statuses)
    assert "possibly-eligible" in statuses.values(), (text, statuses)


@pytest.mark.parametrize("text", DOUBTFUL)
def test_a_suspected_diagnosis_opens_the_cohort_but_no_trial_is_likely(catalog, text):
    statuses = _statuses(catalog, text)
    assert "likely-eligible" not in statuses.values(), (text, statuses)
    assert "possibly-eligible" in statuses.values(), (text, statuses)


@pytest.mark.parametrize("text", PRESENT)
def test_the_patients_own_diagnosis_reads_as_the_coded_one(catalog, text):
    """Words that only look like doubt or negation ("negative anti-dsDNA", "or", a relative's other disease)
    leave the diagnosis as present as the coded record."""
    assert _statuses(catalog, text) == _statuses(catalog, "Systemic lupus erythematosus", coded=True)
