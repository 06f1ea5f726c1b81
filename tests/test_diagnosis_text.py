"""A diagnosis in words is read as a clinician means it: negated after the phrase ("SLE ruled out"), another
person's ("family history of SLE"), or not yet made ("suspected SLE"). Only the patient's own diagnosis opens a
trial's cohort; a suspected one opens it, but no trial is then likely (a person confirms the diagnosis)."""

from __future__ import annotations

import copy
from datetime import date, timedelta

import pytest

from demo.load import demo_bundles

AS_OF = date(2026, 11, 23)
SLE = {"system": "http://snomed.info/sct", "code": "55464009", "display": "Systemic lupus erythematosus"}
DENIED = [
    "no SLE", "r/o SLE", "SLE ruled out", "SLE - ruled out", "SLE excluded", "SLE (excluded)",
    "SLE: negative workup", "SLE not confirmed", "Family history of SLE", "FH SLE", "mother has SLE",
    "sister with SLE", "Family history: SLE", "FHx: SLE", "SLE workup: negative", "SLE work-up was normal",
    "SLE in her mother", "SLE was ruled out", "SLE - mother has it", "SLE in 2 maternal aunts",
]  # fmt: skip
# a negation or a relative later in the clause that may or may not be about SLE: no diagnosis in text alone,
# one not yet made beside an SLE code (a person reads it), never a definite "out" for coded SLE
CONTESTED = [
    "SLE (nephritis ruled out)", "SLE - APS unlikely", "SLE dx 2015 - nephritis excluded by biopsy",
    "SLE (biopsy 2019) ruled out", "SLE - per rheumatology ruled out", "SLE like her mother",
]  # fmt: skip
# another disease named after SLE (undifferentiated connective tissue disease): no SLE in the text alone
OTHER_DISEASE = ["Undifferentiated connective tissue disease (SLE-like)", "lupus-like syndrome", "SLE like illness"]
DOUBTFUL = [
    "suspected SLE", "? SLE", "possible SLE", "Evaluate for SLE", "SLE vs RA", "SLE?",
    "ANA positive - SLE workup pending", "SLE workup neg for nephritis", "SLE workup: ANA positive, low C3",
    "SLE not ruled out", "SLE cannot be ruled out", "SLE dx pending",
]  # fmt: skip
PRESENT = [
    "SLE", "Systemic lupus erythematosus", "SLE with negative anti-dsDNA", "SLE without nephritis",
    "History of SLE", "SLE, mother has RA", "Seronegative SLE", "SLE on hydroxychloroquine or mycophenolate",
    "SLE - renal biopsy pending", "SLE with lupus-like rash", "SLE likely class IV nephritis",
    "SLE - mother has RA",  # the relative's own disease: the patient's SLE stands
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


@pytest.mark.parametrize("text", ["SLE-like flare", "SLE like illness", *CONTESTED])
def test_coded_sle_whose_text_contests_it_is_a_diagnosis_not_yet_made(catalog, text):
    """The code says SLE, its own text a likeness or a negation that may be about something else: neither a
    definite diagnosis nor a definite "out"."""
    statuses = _statuses(catalog, text, coded=True)
    assert "likely-eligible" not in statuses.values(), (text, statuses)
    assert "possibly-eligible" in statuses.values(), (text, statuses)


@pytest.mark.parametrize("text", CONTESTED)
def test_text_alone_that_contests_sle_gets_no_card(catalog, text):
    statuses = _statuses(catalog, text)
    assert set(statuses.values()) <= {"ineligible", "not-assessed", "draft"}, (text, statuses)


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


def _with_active_condition(catalog, codes: list[tuple[str, str]], text: str | None) -> dict[str, str]:
    """Each trial's status for demo-amara with one more Condition, active since 30 days ago, coded `codes` and
    written `text` (None: without it)."""
    bundle = copy.deepcopy(demo_bundles(AS_OF)["demo-amara"])
    if text is not None:
        patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
        condition = {
            "resourceType": "Condition",
            "id": "x1",
            "subject": {"reference": f"Patient/{patient}"},
            "clinicalStatus": {"coding": [{"system": clinical, "code": "active"}]},
            "onsetDateTime": (AS_OF - timedelta(days=30)).isoformat(),
            "code": {"coding": [{"system": s, "code": c} for s, c in codes], "text": text},
        }
        bundle["entry"].append({"resource": condition})
    return {t.id: t.status for t in catalog.report(catalog.facts(bundle), AS_OF).trials}


@pytest.mark.parametrize(
    ("codes", "text"),
    [
        ([("http://snomed.info/sct", "77386006")], "Pregnancy ruled out"),
        ([("http://hl7.org/fhir/sid/icd-10-cm", "M32.0")], "Drug-induced lupus (hydralazine) ruled out"),
        ([("http://hl7.org/fhir/sid/icd-10-cm", "B00.4")], "Herpes encephalitis - CSF HSV PCR was negative"),
        (
            [("http://hl7.org/fhir/sid/icd-10-cm", "D80.0")],
            "X-linked agammaglobulinemia - genetic testing was negative",
        ),
    ],
)
def test_an_exclusion_whose_own_text_negates_it_goes_to_a_person(catalog, codes, text):
    """A coded exclusion whose text says it was ruled out or came back negative was a definite fail (or, with
    the negation later in the clause, read as present): a person reads it, no trial is ineligible by it."""
    before = _with_active_condition(catalog, codes, None)
    after = _with_active_condition(catalog, codes, text)
    assert [t for t, st in after.items() if st == "ineligible" and before[t] != "ineligible"] == [], (text, after)


def test_a_code_title_with_not_or_without_still_decides(catalog):
    """ "not otherwise specified" and "without ..." are parts of code titles, not negations: a coded exclusion
    with such a text decides as it does with its plain name."""
    cancer = [("http://hl7.org/fhir/sid/icd-10-cm", "C50.911")]
    plain = _with_active_condition(catalog, cancer, "Malignant neoplasm of breast")
    titled = "Malignant neoplasm of breast, not otherwise specified, without metastasis"
    assert _with_active_condition(catalog, cancer, titled) == plain
