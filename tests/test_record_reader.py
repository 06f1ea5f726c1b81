"""Records read as the EHR wrote them (clinical audit 2, ../shared/reference/clinical-audit-2.md): nothing
unreadable counts as absent, nothing negated counts as positive. One case per finding addressed here, built
from the audit's case description on the all-in-range synthetic patient; each failed on main 7603d3e."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from helpers import criterion, drop, evaluate

from cds_service.fhir.codes import ICD10, LOINC, RXNORM, SNOMED
from cds_service.fhir.queries import prefetch_templates, searches
from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
T1, T2, T3, T4 = "NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119"
P = "p1"
RITUXIMAB, MMF, PREDNISONE, HIV = "121191", "68149", "8640", "56888-1"


def d(n: int) -> date:
    return AS_OF - timedelta(days=n)


def text_result(loinc: str, text: str, when: date) -> dict:
    obs = syn._obs_base(P, LOINC, loinc, loinc, when, "final")
    obs["valueString"] = text
    return obs


# --- NH1 / NS20: negation first -------------------------------------------------------------------------

# Result strings as laboratory catalogues print them (Quest, LabCorp, ARUP, Mayo reports; HL7 v2 OBX-5 text)
NEGATIVE = [
    "NON REACTIVE", "Non Reactive", "Non-Reactive", "Nonreactive", "Not reactive", "None detected",
    "Not Detected", "NOT DETECTED", "No HBV DNA detected", "No HIV-1/HIV-2 antibodies detected", "Not present",
    "Negative", "NEG", "Absent", "HIV-1/2 Ab: Non-reactive", "Negative for HIV-1 and HIV-2 antibodies",
    "Target not detected", "Undetected",
]  # fmt: skip
POSITIVE = ["Reactive", "REACTIVE", "Repeatedly reactive", "Positive", "POS", "Detected", "Weakly positive",
            "Detected, below the limit of quantitation", "Present"]  # fmt: skip
UNKNOWN = ["Indeterminate", "Equivocal", "See note", "Test not performed", "Cancelled", "Positive; negative on repeat"]


@pytest.mark.parametrize("text", NEGATIVE)
def test_negated_result_text_is_negative(catalog, text):
    facts = catalog.facts([syn.patient(P), text_result(HIV, text, d(5))], P)
    assert facts.labs["hiv_ab"][0].positive is False, text


@pytest.mark.parametrize("text", POSITIVE)
def test_positive_result_text_is_positive(catalog, text):
    facts = catalog.facts([syn.patient(P), text_result(HIV, text, d(5))], P)
    assert facts.labs["hiv_ab"][0].positive is True, text


@pytest.mark.parametrize("text", UNKNOWN)
def test_unrecognised_result_text_is_unknown(catalog, text):
    facts = catalog.facts([syn.patient(P), text_result(HIV, text, d(5))], P)
    assert facts.labs["hiv_ab"][0].positive is None, text


def test_a_normal_hiv_screen_written_non_reactive_excludes_nobody(catalog, eligible):
    """NH1: one normal HIV screen made three trials permanently ineligible."""
    res = [*drop(eligible, HIV), text_result(HIV, "NON REACTIVE", d(5))]
    assert criterion(catalog, res, T1, "exc-11", AS_OF).outcome == "pass"


def test_pregnancy_status_coded_without_text_is_read(catalog, eligible):
    """NS6: 82810-3 = SNOMED 77386006 "Pregnant" with no text."""
    obs = syn._obs_base(P, LOINC, "82810-3", "Pregnancy status", d(2), "final")
    obs["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]}
    assert criterion(catalog, [*eligible, obs], T1, "exc-22", AS_OF).outcome == "fail"


# --- NS1-NS4, NH3: every place medication use is recorded ----------------------------------------------


def ritux_request(**medication) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": "mr-ritux",
        "status": "completed",
        "intent": "order",
        "subject": {"reference": f"Patient/{P}"},
        "authoredOn": d(20).isoformat(),
        **medication,
    }


def test_an_unresolvable_medication_reference_is_never_none_on_record(catalog, eligible):
    """NS1: the drug cannot be identified, so the washout cannot be said to be clear."""
    mr = ritux_request(medicationReference={"reference": "Medication/med-unknown"})
    c = criterion(catalog, [*eligible, mr], T1, "exc-7.3", AS_OF)
    assert c.outcome == "unknown" and any("could not be identified" in m for m in c.missing)


def test_a_medication_record_that_is_not_valid_fhir_is_never_none_on_record(catalog, eligible):
    """A rituximab order whose date is a number, not a FHIR dateTime, is set aside unread; it may be the very
    course the washout asks about, so the washout cannot be said to be clear (it read as passed before)."""
    mr = ritux_request(medicationCodeableConcept={"coding": [{"system": RXNORM, "code": RITUXIMAB}]})
    mr["authoredOn"] = 20261103
    c = criterion(catalog, [*eligible, mr], T1, "exc-7.3", AS_OF)
    assert c.outcome == "unknown" and any("not valid FHIR" in m for m in c.missing), c


def test_a_medication_reference_resolved_from_the_bundle_counts(catalog, eligible):
    med = {"resourceType": "Medication", "id": "med-1", "code": {"coding": [{"system": RXNORM, "code": RITUXIMAB}]}}
    mr = ritux_request(medicationReference={"reference": "Medication/med-1"})
    c = criterion(catalog, [*eligible, med, mr], T1, "exc-7.3", AS_OF)
    assert c.outcome == "fail" and c.until is not None


def test_the_searches_and_templates_include_the_referenced_medications():
    assert "_include=MedicationRequest:medication" in searches("medicationRequests", P)[0].path
    assert searches("medicationRequests", P)[0].plain  # a server refusing _include is asked the plain search
    assert "_include=MedicationStatement:medication" in prefetch_templates()["medications"]


def test_an_infusion_recorded_as_medication_administration_counts(catalog, eligible):
    """NS2: a rituximab infusion 20 days ago, only as a MedicationAdministration."""
    ma = {
        "resourceType": "MedicationAdministration",
        "id": "ma-1",
        "status": "completed",
        "subject": {"reference": f"Patient/{P}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": RITUXIMAB}], "text": "riTUXimab"},
        "effectiveDateTime": d(20).isoformat(),
    }
    c = criterion(catalog, [*eligible, ma], T1, "exc-7.3", AS_OF)
    assert c.outcome == "fail" and c.until is not None and c.until > AS_OF  # a washout running from the infusion


def test_a_dispense_covers_its_days_supply(catalog, eligible):
    md = {
        "resourceType": "MedicationDispense",
        "id": "md-1",
        "status": "completed",
        "subject": {"reference": f"Patient/{P}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": MMF}], "text": "mycophenolate"},
        "whenHandedOver": d(10).isoformat(),
        "daysSupply": {"value": 30, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
    }
    facts = catalog.facts([*drop(eligible, MMF), md], P)
    assert [m.ongoing(AS_OF) for m in facts.medications if m.resource == "MedicationDispense/md-1"] == [True]


def test_a_stopped_drug_without_an_end_date_is_not_last_used_on_its_start(catalog, eligible):
    """NS3: MMF stopped at an unknown date, asserted 3 days ago."""
    stopped = syn.med_statement(P, MMF, "mycophenolate mofetil 500 MG", d(730), status="stopped")
    stopped["dateAsserted"] = d(3).isoformat()
    c = criterion(catalog, [*drop(eligible, MMF), stopped], T1, "exc-7.2", AS_OF)
    assert c.outcome == "review" and any("stop date not recorded" in r for r in c.review)


def test_refills_extend_the_course(catalog, eligible):
    """NS4: authored 90 days ago, 30 days' supply, 5 refills: taken until about 90 days from now."""
    mr = syn.med_request(P, MMF, "mycophenolate mofetil 500 MG", d(90), supply_days=30)
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 5
    facts = catalog.facts([*drop(eligible, MMF), mr], P)
    (fact,) = [m for m in facts.medications if m.resource == f"MedicationRequest/{mr['id']}"]
    assert fact.end == d(90) + timedelta(days=180)


def test_the_newest_order_sets_the_current_dose(catalog, eligible):
    """NH3: an old 40 mg prednisone order left active does not outrank today's 10 mg."""
    old = syn.med_request(P, PREDNISONE, "predniSONE 40 MG", d(200), dose_mg=40)
    new = syn.med_request(P, PREDNISONE, "predniSONE 10 MG", d(20), dose_mg=10)
    new["id"] = "mr-new"
    c = criterion(catalog, [*drop(eligible, PREDNISONE), old, new], T4, "inc-3", AS_OF)
    assert c.outcome != "fail"


# --- NS5, NH2, NS8, NS14: conditions as problem lists hold them -----------------------------------------


def test_an_undated_history_of_cancer_is_not_outside_every_window(catalog, eligible):
    """NS5: Z85.3 with no dates, or entered a year ago, goes to a person, never "none within 5 years"."""
    for extra in ({}, {"recordedDate": d(365).isoformat()}):
        z85 = syn.condition(P, icd="Z85.3", display="Personal history of breast cancer") | extra
        z85.pop("onsetDateTime", None)
        assert criterion(catalog, [*eligible, z85], T1, "exc-20", AS_OF).outcome == "review", extra


def test_a_pregnancy_code_left_active_for_years_is_not_a_permanent_bar(catalog, eligible):
    """NH2: gestational diabetes O24.419, active since 2021."""
    gdm = syn.condition(P, icd="O24.419", display="Gestational diabetes", onset="2021-03-01")
    assert criterion(catalog, [*eligible, gdm], T1, "exc-22", AS_OF).outcome == "review"
    assert evaluate(catalog, [*eligible, gdm], T1, AS_OF).status != "ineligible"


def test_agalactia_is_not_breastfeeding(catalog, eligible):
    o923 = syn.condition(P, icd="O92.3", display="Agalactia", onset=d(30))
    assert criterion(catalog, [*eligible, o923], T1, "exc-22", AS_OF).outcome == "pass"


def test_a_positive_pregnancy_test_ten_days_ago_shows_no_card(catalog, eligible):
    """NS8: it used to give "possibly eligible from 2027-09-17" on every card."""
    hcg = syn.qualitative(P, "2118-8", True, d(10))
    res = [*drop(eligible, "2118-8"), hcg]
    for trial in (T1, T4):
        assert evaluate(catalog, res, trial, AS_OF).status == "ineligible"


def test_who_icd10_conditions_are_read(catalog, eligible):
    """NS14: a cerebral infarction 30 days ago coded in WHO ICD-10."""
    stroke = syn.condition(P, display="Cerebral infarction", onset=d(30))
    stroke["code"] = {"coding": [{"system": ICD10, "code": "I63.9"}]}
    assert criterion(catalog, [*eligible, stroke], T1, "exc-18", AS_OF).outcome == "fail"


@pytest.mark.parametrize("cvx", ["309", "310", "311", "312"])
def test_the_current_mrna_covid_formulas_count_as_mrna_lnp(catalog, eligible, cvx):
    """NS10: CVX 309-312 (every US mRNA COVID-19 formula since September 2023), code only, 60 days ago."""
    imm = syn.immunization(P, cvx, "", d(60))
    imm["vaccineCode"] = {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]}
    assert criterion(catalog, [*eligible, imm], T4, "exc-5", AS_OF).outcome == "fail"


def test_a_condition_written_only_in_words_no_map_reads_leaves_exclusions_unknown(catalog, eligible):
    """NS14 residual: "Breast cancer" as text only (no code) used to be dropped, so "no malignancy within 5
    years" passed on a record that names one; an entry the maps cannot read makes "none on record" unknown."""
    cancer = {"resourceType": "Condition", "id": "c-text", "subject": {"reference": f"Patient/{P}"},
              "code": {"text": "Breast cancer"}, "onsetDateTime": d(200).isoformat()}  # fmt: skip
    c = criterion(catalog, [*eligible, cancer], T1, "exc-20", AS_OF)
    assert c.outcome == "unknown" and any("cannot be ruled out" in m for m in c.missing)
    local = dict(cancer, code={"coding": [{"system": "urn:oid:1.2.3.4", "code": "BRCA-1"}], "text": "Breast cancer"})
    assert criterion(catalog, [*eligible, local], T1, "exc-20", AS_OF).outcome == "unknown"
    coded = dict(cancer, code={"coding": [{"system": SNOMED, "code": "195967001"}], "text": "Asthma"})
    assert criterion(catalog, [*eligible, coded], T1, "exc-20", AS_OF).outcome == "pass"  # read: not a cancer
    assert evaluate(catalog, [*eligible, cancer], T1, AS_OF).status == "possibly-eligible"


def test_words_no_map_reads_are_told_from_words_it_does(catalog, eligible):
    """Fresh-eyes review of the rule above: "Measles" is not "SLE", an excluding phrase alone names nothing,
    a refuted entry is never unread, and "Drug-induced lupus" is read as the disease it names."""

    def entry(text: str, **extra) -> dict:
        return {"resourceType": "Condition", "id": f"c-{abs(hash(text))}", "subject": {"reference": f"Patient/{P}"},
                "code": {"text": text}, **extra}  # fmt: skip

    for text in ("Measles encephalitis", "Drug-induced seizures"):
        assert criterion(catalog, [*eligible, entry(text)], T3, "exc-5", AS_OF).outcome == "unknown", text
    refuted = entry("Breast cancer", verificationStatus={"coding": [{"code": "refuted"}]})
    assert criterion(catalog, [*eligible, refuted], T1, "exc-20", AS_OF).outcome == "pass"
    dil = entry("Drug-induced lupus", clinicalStatus={"coding": [{"code": "active"}]})
    assert criterion(catalog, [*eligible, dil], T3, "exc-12", AS_OF).outcome == "fail"
    assert criterion(catalog, [*eligible, dil], T1, "exc-20", AS_OF).outcome == "pass"  # read: not a cancer
