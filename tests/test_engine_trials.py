"""Per trial: synthetic patients move each computable criterion between pass, fail, unknown, review."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from helpers import criterion, drop, evaluate, replace, set_patient

from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
TRIALS = ["NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119", "NCT06676631"]


def d(n: int) -> date:
    return AS_OF - timedelta(days=n)


# --- whole-trial status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("trial_id", TRIALS)
def test_all_data_in_range_is_likely_eligible(catalog, eligible, trial_id):
    result = evaluate(catalog, eligible, trial_id, AS_OF)
    assert result.status == "likely-eligible", [
        (c.id, c.outcome, c.missing) for c in result.criteria if c.outcome in ("fail", "unknown")
    ]
    assert result.count("fail") == 0 and result.count("unknown") == 0
    assert result.count("pass") > 0


def test_age_limits_decide_which_trials_fit(catalog):
    """A 70-year-old with all data in range fits only the trials whose age limits include 70."""
    patient = syn.eligible_patient(AS_OF, birth="1956-01-10")
    status = {t: evaluate(catalog, patient, t, AS_OF).status for t in TRIALS}
    assert status == {
        "NCT06902844": "likely-eligible",  # >= 18
        "NCT07274059": "likely-eligible",  # 18-75
        "NCT06010472": "ineligible",  # 18-65
        "NCT06801119": "ineligible",  # 18-69
        "NCT06676631": "ineligible",  # 18-65
    }


@pytest.mark.parametrize(
    ("loinc", "label", "trials_using_it"),
    [
        ("10230-1", "Left ventricular ejection fraction", ["NCT06902844", "NCT06010472", "NCT06801119", "NCT06676631"]),
        ("751-8", "Absolute neutrophil count", ["NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119"]),
        ("2160-0", "creatinine", ["NCT06902844", "NCT07274059", "NCT06801119", "NCT06676631"]),
    ],
)
def test_removing_one_required_lab_makes_possibly_eligible_never_ineligible(
    catalog, eligible, loinc, label, trials_using_it
):
    patient = drop(eligible, loinc)
    for t in TRIALS:
        result = evaluate(catalog, patient, t, AS_OF)
        if t in trials_using_it:
            assert result.status == "possibly-eligible", t
            assert any(label in m for m in result.missing), (t, result.missing)
        else:
            assert result.status == "likely-eligible", t


def test_only_temporary_bars_give_possibly_eligible_with_date(catalog, eligible):
    """Rituximab given 30 days ago: a 2-month washout still running, nothing else in the way."""
    end = d(30)
    patient = [*eligible, syn.med_statement("p1", "121191", "Rituximab 1000 MG", d(45), end, status="completed")]
    result = evaluate(catalog, patient, "NCT06902844", AS_OF)
    washout = next(c for c in result.criteria if c.id == "exc-7.3")
    assert washout.outcome == "fail"
    assert washout.until == date(2026, 12, 25)  # 2 months after 2026-10-24, plus the day it clears
    assert result.status == "possibly-eligible"
    assert result.eligible_from == washout.until


def test_a_permanent_fail_beats_a_temporary_one(catalog, eligible):
    patient = [
        *eligible,
        syn.med_statement("p1", "121191", "Rituximab", d(45), d(30), status="completed"),
        syn.condition("p1", icd="Z94.0", display="Kidney transplant status", onset=d(900)),
    ]
    result = evaluate(catalog, patient, "NCT06902844", AS_OF)
    assert result.status == "ineligible" and result.eligible_from is None


# --- NCT06902844 (Eque-cel) -------------------------------------------------------------------------------

T1 = "NCT06902844"


def test_t1_age_under_18_is_temporary_only_inside_the_horizon(catalog, eligible):
    soon = criterion(catalog, set_patient(eligible, birthDate="2008-12-01"), T1, "inc-1", AS_OF)
    assert soon.outcome == "fail" and soon.until == date(2026, 12, 1)
    # 16 years old: 18 in 2028, beyond the 365-day horizon, is a fail today that names the date
    young = set_patient(eligible, birthDate="2010-03-01")
    later = criterion(catalog, young, T1, "inc-1", AS_OF)
    assert later.outcome == "fail" and "eligible again only from 2028-03-01" in (later.explanation or "")
    result = evaluate(catalog, young, T1, AS_OF)
    assert result.status == "ineligible" and result.eligible_from is None
    assert criterion(catalog, set_patient(eligible, birthDate=None), T1, "inc-1", AS_OF).outcome == "unknown"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: replace(p, "sledai-2k-total", syn.score("p1", "sledai-2k-total", 6, d(7))), "fail"),
        (lambda p: drop(p, "sledai-2k-total"), "unknown"),
        (lambda p: replace(p, "bilag-2004", syn.bilag("p1", {x: "D" for x in syn.BILAG_DOMAINS}, d(7))), "fail"),
        (lambda p: drop(p, "bilag-2004"), "unknown"),
        (lambda p: drop(p, "55464009"), "unknown"),  # no SLE on record: missing, not failed
        (lambda p: p, "review"),  # computable part passes; classification criteria need a person
    ],
)
def test_t1_sle_activity(catalog, eligible, change, expected):
    assert criterion(catalog, change(eligible), T1, "inc-2.1", AS_OF).outcome == expected


def test_t1_lupus_nephritis_subgroup(catalog, eligible):
    ln = syn.condition("p1", icd="M32.14", display="Glomerular disease in SLE", onset=d(400))
    klass = lambda v: syn.coded("p1", syn.LOCAL, "isn-rps-class", syn.LOCAL, v, d(300))  # noqa: E731
    assert criterion(catalog, eligible, T1, "inc-2.2", AS_OF).outcome == "pass"  # no LN: not applicable
    assert criterion(catalog, [*eligible, ln], T1, "inc-2.2", AS_OF).outcome == "unknown"
    assert criterion(catalog, [*eligible, ln, klass("IV+V")], T1, "inc-2.2", AS_OF).outcome == "pass"
    # class II: not the LN cohort, but the patient may still enter the non-LN cohort (H6): a person decides
    assert criterion(catalog, [*eligible, ln, klass("II")], T1, "inc-2.2", AS_OF).outcome == "review"


def test_t1_treatment_history_missing_is_unknown_never_fail(catalog, eligible):
    patient = drop(eligible, "68149", "5521", "1092437")
    c = criterion(catalog, patient, T1, "inc-2.3", AS_OF)
    assert c.outcome == "unknown"
    assert any("treatment history" in m for m in c.missing)


def test_t1_antibodies(catalog, eligible):
    negative = [
        *drop(eligible, "5048-4", "5130-0", "11090-8"),
        syn.qualitative("p1", "8061-4", False, d(30)),
        syn.quantity("p1", "5130-0", 5, "[IU]/mL", d(10), high=30),
        syn.qualitative("p1", "11090-8", False, d(30), style="interpretation"),
        syn.titer("p1", "5048-4", 40, d(30)),
    ]
    assert criterion(catalog, eligible, T1, "inc-3", AS_OF).outcome == "pass"
    assert criterion(catalog, negative, T1, "inc-3", AS_OF).outcome == "fail"
    assert criterion(catalog, drop(eligible, "5048-4", "5130-0", "11090-8"), T1, "inc-3", AS_OF).outcome == "unknown"


def test_t1_neuropsychiatric_bilag_a(catalog, eligible):
    neuro_a = syn.bilag("p1", {"neuropsychiatric": "A", "mucocutaneous": "B"}, d(3))
    assert criterion(catalog, [*eligible, neuro_a], T1, "exc-1", AS_OF).outcome == "fail"
    assert criterion(catalog, drop(eligible, "bilag-2004"), T1, "exc-1", AS_OF).outcome == "unknown"


def test_t1_transplant_and_cell_therapy(catalog, eligible):
    kidney = syn.condition("p1", icd="Z94.0", display="Kidney transplant status", onset=d(3000))
    assert criterion(catalog, [*eligible, kidney], T1, "exc-2", AS_OF).outcome == "fail"
    cart = syn.med_statement("p1", "999999", "Tisagenlecleucel infusion", d(900), d(900), status="completed")
    assert criterion(catalog, [*eligible, cart], T1, "exc-4", AS_OF).outcome == "fail"
    assert criterion(catalog, eligible, T1, "exc-4", AS_OF).outcome == "pass"


def test_t1_steroid_dose_washout(catalog, eligible):
    on_30 = replace(eligible, "8640", syn.med_statement("p1", "8640", "predniSONE 10 MG", d(100), dose_mg=30))
    c = criterion(catalog, on_30, T1, "exc-7.1", AS_OF)
    assert c.outcome == "review" and "taper" in c.review[0]
    stopped = replace(
        eligible,
        "8640",
        syn.med_statement("p1", "6902", "methylPREDNISolone 20 MG", d(60), d(3), status="stopped", dose_mg=20),
    )
    c = criterion(catalog, stopped, T1, "exc-7.1", AS_OF)  # 20 mg methylpred = 25 mg prednisone
    assert c.outcome == "fail" and c.until == d(3) + timedelta(days=8)
    assert criterion(catalog, eligible, T1, "exc-7.1", AS_OF).outcome == "pass"  # 10 mg/day


def test_t1_ongoing_immunosuppressant_needs_review_not_fail(catalog, eligible):
    c = criterion(catalog, eligible, T1, "exc-7.2", AS_OF)
    assert c.outcome == "review" and "Mycophenolate" in c.review[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([syn.qualitative("p1", "5196-1", True, d(5)), syn.quantity("p1", "42595-9", 500, "[IU]/mL", d(5))], "fail"),
        (
            [
                syn.qualitative("p1", "5196-1", True, d(5)),
                syn.quantity("p1", "42595-9", 20, "[IU]/mL", d(5), comparator="<"),
            ],
            "pass",
        ),
        ([syn.qualitative("p1", "5196-1", True, d(5))], "unknown"),  # HBV DNA needed to decide
        ([syn.qualitative("p1", "13955-0", True, d(5)), syn.quantity("p1", "11011-4", 5000, "[IU]/mL", d(5))], "fail"),
        ([syn.qualitative("p1", "56888-1", True, d(5))], "fail"),
        ([syn.quantity("p1", "72493-0", 2500, "[IU]/mL", d(2))], "fail"),
        ([syn.qualitative("p1", "24110-9", True, d(5)), syn.qualitative("p1", "20507-0", False, d(5))], "pass"),
    ],
)
def test_t1_infection_screen(catalog, eligible, extra, expected):
    codes = {next(iter(c["code"]["coding"]))["code"] for c in extra}
    patient = [*drop(eligible, *codes), *extra]
    assert criterion(catalog, patient, T1, "exc-11", AS_OF).outcome == expected


def test_t1_missing_cmv_is_unknown(catalog, eligible):
    c = criterion(catalog, drop(eligible, "72493-0"), T1, "exc-11", AS_OF)
    assert c.outcome == "unknown" and any("CMV" in m for m in c.missing)


def test_t1_blood_counts(catalog, eligible):
    low_anc = replace(eligible, "751-8", syn.quantity("p1", "751-8", 800, "/uL", d(1)))
    assert criterion(catalog, low_anc, T1, "exc-12", AS_OF).outcome == "fail"
    low_hb = replace(eligible, "718-7", syn.quantity("p1", "718-7", 5.5, "g/dL", d(1)))
    assert criterion(catalog, low_hb, T1, "exc-12", AS_OF).outcome == "fail"
    stale = replace(eligible, "751-8", syn.quantity("p1", "751-8", 3.0, "10*3/uL", d(45)))
    c = criterion(catalog, stale, T1, "exc-12", AS_OF)
    assert c.outcome == "unknown" and any("older than 30 days" in m for m in c.missing)


def test_t1_cardiac(catalog, eligible):
    assert (
        criterion(
            catalog, replace(eligible, "10230-1", syn.quantity("p1", "10230-1", 40, "%", d(5))), T1, "exc-13", AS_OF
        ).outcome
        == "fail"
    )
    recent_mi = syn.condition(
        "p1", snomed="22298006", display="Myocardial infarction", onset=d(200), abatement=d(180), clinical="resolved"
    )
    c = criterion(catalog, [*eligible, recent_mi], T1, "exc-13", AS_OF)
    assert c.outcome == "fail" and c.until is not None and c.until > AS_OF
    old_mi = syn.condition(
        "p1", snomed="22298006", display="Myocardial infarction", onset=d(800), abatement=d(780), clinical="resolved"
    )
    assert criterion(catalog, [*eligible, old_mi], T1, "exc-13", AS_OF).outcome == "review"  # also_review text


def test_t1_kidney_egfr_from_creatinine(catalog, eligible):
    patient = replace(eligible, "2160-0", syn.quantity("p1", "14682-9", 265, "umol/L", d(2)))
    c = criterion(catalog, patient, T1, "exc-17", AS_OF)
    assert c.outcome == "fail"
    assert any(e.note and "calculated from" in e.note for e in c.evidence)


def test_t1_malignancy_exceptions(catalog, eligible):
    bcc = syn.condition(
        "p1", icd="C44.91", display="Basal cell carcinoma of skin", onset=d(700), abatement=d(650), clinical="resolved"
    )
    assert criterion(catalog, [*eligible, bcc], T1, "exc-20", AS_OF).outcome == "review"
    breast = syn.condition("p1", icd="C50.911", display="Breast cancer", onset=d(1000))
    assert criterion(catalog, [*eligible, breast], T1, "exc-20", AS_OF).outcome == "fail"
    old = syn.condition(
        "p1", icd="C50.911", display="Breast cancer", onset=d(2900), abatement=d(2500), clinical="resolved"
    )
    assert criterion(catalog, [*eligible, old], T1, "exc-20", AS_OF).outcome == "pass"
    unconfirmed = syn.condition(
        "p1", icd="C50.911", display="Breast mass, ?cancer", onset=d(100), verification="provisional"
    )
    assert criterion(catalog, [*eligible, unconfirmed], T1, "exc-20", AS_OF).outcome == "review"


def test_t1_pregnancy(catalog, eligible):
    assert (
        criterion(
            catalog, replace(eligible, "2118-8", syn.qualitative("p1", "2118-8", True, d(1))), T1, "exc-22", AS_OF
        ).outcome
        == "fail"
    )
    pregnant = syn.condition("p1", snomed="77386006", display="Pregnant", onset=d(60))
    assert criterion(catalog, [*eligible, pregnant], T1, "exc-22", AS_OF).outcome == "fail"
    past = syn.condition(
        "p1", snomed="77386006", display="Pregnant", onset=d(2000), abatement=d(1800), clinical="resolved"
    )
    assert criterion(catalog, [*eligible, past], T1, "exc-22", AS_OF).outcome == "pass"


# --- NCT07274059 (allogeneic UCB CAR-T) --------------------------------------------------------------------

T2 = "NCT07274059"


def test_t2_age_over_75_is_permanent(catalog, eligible):
    c = criterion(catalog, set_patient(eligible, birthDate="1945-01-01"), T2, "inc-1", AS_OF)
    assert c.outcome == "fail" and c.until is None


def test_t2_neutropenia_caused_by_sle_goes_to_review(catalog, eligible):
    low = replace(eligible, "751-8", syn.quantity("p1", "751-8", 0.7, "10*9/L", d(2)))
    assert criterion(catalog, low, T2, "inc-5.1", AS_OF).outcome == "review"
    gcsf = syn.med_statement("p1", "000", "Filgrastim 300 MCG injection", d(8), d(5), status="completed")
    c = criterion(catalog, [*eligible, gcsf], T2, "inc-5.1", AS_OF)
    assert c.outcome == "fail" and c.until == d(5) + timedelta(weeks=2, days=1)


def test_t2_liver_uses_reference_range_then_default_uln(catalog, eligible):
    high = replace(eligible, "1742-6", syn.quantity("p1", "1742-6", 150, "U/L", d(2), high=40))
    assert criterion(catalog, high, T2, "inc-5.3", AS_OF).outcome == "review"
    # ULN from the lab's range (200) makes 150 fine; without a range the documented default (40) applies
    wide = replace(eligible, "1742-6", syn.quantity("p1", "1742-6", 150, "U/L", d(2), high=200))
    assert criterion(catalog, wide, T2, "inc-5.3", AS_OF).outcome == "pass"
    no_range = replace(eligible, "1742-6", syn.quantity("p1", "1742-6", 30, "U/L", d(2)))
    c = criterion(catalog, no_range, T2, "inc-5.3", AS_OF)
    assert c.outcome == "pass" and "default" in (c.evidence[0].note or "")


def test_t2_crcl_needs_weight(catalog, eligible):
    c = criterion(catalog, drop(eligible, "29463-7"), T2, "inc-5.6", AS_OF)
    assert c.outcome == "unknown" and any("body weight" in m for m in c.missing)


def test_t2_coagulation(catalog, eligible):
    high = replace(eligible, "6301-6", syn.quantity("p1", "6301-6", 2.0, "{INR}", d(2), high=1.2))
    assert criterion(catalog, high, T2, "inc-5.7", AS_OF).outcome == "fail"


def test_t2_pregnancy_test_needed_for_women_only(catalog, eligible):
    # the negative serum hCG within 7 days is a screening step (W3): no test yet is review, not unknown
    c = criterion(catalog, drop(eligible, "2118-8"), T2, "inc-6", AS_OF)
    assert c.outcome == "review" and any("hCG" in r for r in c.review)
    urine = syn.qualitative("p1", "2106-3", True, d(2), display="hCG urine")
    assert criterion(catalog, [*drop(eligible, "2118-8"), urine], T2, "inc-6", AS_OF).outcome == "fail"
    male = syn.eligible_patient(AS_OF, gender="male")
    assert criterion(catalog, male, T2, "inc-6", AS_OF).outcome == "review"  # passes; contraception review


def test_t2_biologic_washout(catalog, eligible):
    bel = syn.med_statement("p1", "1092437", "Belimumab", d(100), d(14), status="completed")
    c = criterion(catalog, [*drop(eligible, "1092437"), bel], T2, "exc-9", AS_OF)
    assert c.outcome == "fail" and c.until == d(14) + timedelta(weeks=4, days=1)


# --- NCT06010472 (CAR-NK) ----------------------------------------------------------------------------------

T3 = "NCT06010472"


def test_t3_lvef_threshold(catalog, eligible):
    assert (
        criterion(
            catalog, replace(eligible, "10230-1", syn.quantity("p1", "10230-1", 45, "%", d(5))), T3, "inc-11", AS_OF
        ).outcome
        == "fail"
    )


def test_t3_cns_disease(catalog, eligible):
    epi = syn.condition("p1", icd="G40.909", display="Epilepsy", onset=d(5000))
    assert criterion(catalog, [*eligible, epi], T3, "exc-5", AS_OF).outcome == "fail"
    tia = syn.condition("p1", icd="G45.9", display="TIA", onset=d(900), clinical="resolved", abatement=d(899))
    assert criterion(catalog, [*eligible, tia], T3, "exc-5", AS_OF).outcome == "review"


def test_t3_malignancy_active_vs_cured(catalog, eligible):
    active = syn.condition("p1", icd="C50.911", display="Breast cancer", onset=d(300))
    assert criterion(catalog, [*eligible, active], T3, "exc-7", AS_OF).outcome == "fail"
    cured = syn.condition(
        "p1", icd="C50.911", display="Breast cancer", onset=d(3000), abatement=d(2700), clinical="resolved"
    )
    assert criterion(catalog, [*eligible, cured], T3, "exc-7", AS_OF).outcome == "review"


def test_t3_b_cell_washout(catalog, eligible):
    rtx = syn.med_request("p1", "121191", "Rituximab 500 MG", d(20), status="completed", supply_days=1)
    c = criterion(catalog, [*eligible, rtx], T3, "exc-14", AS_OF)
    assert c.outcome == "fail" and c.until == d(19) + timedelta(days=31)  # 1 month after last use, +1 day


def test_t3_treatment_duration(catalog, eligible):
    recent = replace(eligible, "68149", syn.med_statement("p1", "68149", "Mycophenolate", d(60), dose_mg=1000))
    recent = drop(recent, "1092437")
    c = criterion(catalog, recent, T3, "inc-12", AS_OF)
    assert c.outcome == "unknown"  # only 2 months of an immunosuppressant on record


# --- NCT06801119 (HN2301) ----------------------------------------------------------------------------------

T4 = "NCT06801119"


def test_t4_steroid_dose_window(catalog, eligible):
    high = replace(eligible, "8640", syn.med_statement("p1", "8640", "predniSONE", d(100), dose_mg=40))
    assert criterion(catalog, high, T4, "inc-3", AS_OF).outcome == "fail"
    low_with_is = replace(eligible, "8640", syn.med_statement("p1", "8640", "predniSONE", d(100), dose_mg=5))
    assert criterion(catalog, low_with_is, T4, "inc-3", AS_OF).outcome == "pass"
    low_alone = drop(low_with_is, "68149")
    assert criterion(catalog, low_alone, T4, "inc-3", AS_OF).outcome == "unknown"
    dexa = replace(eligible, "8640", syn.med_statement("p1", "3264", "Dexamethasone", d(100), dose_mg=4))
    c = criterion(catalog, dexa, T4, "inc-3", AS_OF)  # 4 mg dexamethasone = 26.7 mg prednisone
    assert c.outcome == "pass"
    assert any(e.value and abs(float(e.value) - 26.68) < 0.01 for e in c.evidence)


def test_t4_serology_or_hypocomplementemia(catalog, eligible):
    no_serology = drop(eligible, "5048-4", "5130-0")
    no_serology += [syn.titer("p1", "5048-4", 40, d(30)), syn.quantity("p1", "5130-0", 5, "[IU]/mL", d(10), high=30)]
    assert criterion(catalog, no_serology, T4, "inc-5", AS_OF).outcome == "pass"  # low C3 (60 mg/dL < 90)
    normal_c = replace(
        replace(no_serology, "4485-9", syn.quantity("p1", "4485-9", 1.2, "g/L", d(5))),
        "4498-2",
        syn.quantity("p1", "4498-2", 0.3, "g/L", d(5)),
    )
    assert criterion(catalog, normal_c, T4, "inc-5", AS_OF).outcome == "fail"


def test_t4_sledai_clinical_part(catalog, eligible):
    weak = replace(eligible, "sledai-2k-clinical", syn.score("p1", "sledai-2k-clinical", 2, d(7)))
    weak = replace(weak, "sledai-2k-total", syn.score("p1", "sledai-2k-total", 6, d(7)))
    assert criterion(catalog, weak, T4, "inc-6", AS_OF).outcome == "fail"
    # a total of 8 or more holds at least 4 clinical points (serology scores 4 at most): W1
    total_8 = replace(
        drop(eligible, "sledai-2k-clinical"), "sledai-2k-total", syn.score("p1", "sledai-2k-total", 8, d(7))
    )
    assert criterion(catalog, total_8, T4, "inc-6", AS_OF).outcome == "pass"
    no_serology_points = replace(weak, "sledai-2k-serology", syn.score("p1", "sledai-2k-serology", 0, d(7)))
    assert criterion(catalog, no_serology_points, T4, "inc-6", AS_OF).outcome == "pass"


def test_t4_mrna_and_live_vaccines(catalog, eligible):
    covid = syn.immunization("p1", "208", "COVID-19 mRNA vaccine", d(365))
    c = criterion(catalog, [*eligible, covid], T4, "exc-5", AS_OF)
    assert c.outcome == "fail" and c.until == date(2027, 11, 24)
    old = syn.immunization("p1", "208", "COVID-19 mRNA vaccine", d(800))
    assert criterion(catalog, [*eligible, old], T4, "exc-5", AS_OF).outcome == "pass"
    mmr = syn.immunization("p1", "03", "MMR", d(10))
    c = criterion(catalog, [*eligible, mmr], T4, "exc-7", AS_OF)
    assert c.outcome == "fail" and c.until == d(10) + timedelta(days=31)


def test_t4_asthma(catalog, eligible):
    asthma = syn.condition("p1", icd="J45.909", display="Asthma", onset=d(4000))
    assert criterion(catalog, [*eligible, asthma], T4, "exc-8", AS_OF).outcome == "fail"


# --- NCT06676631 (NK010/NK042) -----------------------------------------------------------------------------

T5 = "NCT06676631"


def test_t5_lupus_nephritis_subgroup(catalog, eligible):
    ln = syn.condition("p1", icd="M32.14", display="Lupus nephritis", onset=d(300))
    biopsy = [
        syn.coded("p1", syn.LOCAL, "isn-rps-class", syn.LOCAL, "IV", d(200)),
        syn.score("p1", "nih-ln-activity-index", 6, d(200)),
    ]
    upcr_ok = syn.quantity("p1", "2890-2", 150, "mg/mmol", d(10))  # 1.33 g/g
    upcr_low = syn.quantity("p1", "2890-2", 500, "mg/g", d(10))  # 0.5 g/g
    assert criterion(catalog, [*eligible, ln, *biopsy, upcr_ok], T5, "inc-3", AS_OF).outcome == "review"
    # below the LN-subgroup bar: the patient may still enter the SLE cohort, so a person decides (H6)
    assert criterion(catalog, [*eligible, ln, *biopsy, upcr_low], T5, "inc-3", AS_OF).outcome == "review"
    assert criterion(catalog, [*eligible, ln, *biopsy], T5, "inc-3", AS_OF).outcome == "unknown"


def test_t5_egfr(catalog, eligible):
    patient = replace(eligible, "2160-0", syn.quantity("p1", "2160-0", 3.5, "mg/dL", d(2)))
    assert criterion(catalog, patient, T5, "inc-7.4", AS_OF).outcome == "fail"


def test_t5_high_inr_on_anticoagulation_is_not_a_fail(catalog, eligible):
    high = replace(eligible, "6301-6", syn.quantity("p1", "6301-6", 2.6, "{INR}", d(2), high=1.2))
    high = replace(high, "5902-2", syn.quantity("p1", "5902-2", 28, "s", d(2), high=13.5))
    c = criterion(catalog, high, T5, "inc-8", AS_OF)
    assert c.outcome == "review"  # high INR, no anticoagulant on a complete record: a person checks (audit 2, NS16)
    warf = syn.med_statement("p1", "000", "Warfarin 5 MG Oral Tablet", d(300))
    assert criterion(catalog, [*high, warf], T5, "inc-8", AS_OF).outcome == "pass"


def test_t1_malignancy_window_counts_from_diagnosis(catalog, eligible):
    """ "Diagnosis of malignancy within 5 years": the bar lifts 5 years after diagnosis, not after treatment."""
    treated = syn.condition(
        "p1", icd="C50.911", display="Breast cancer", onset=d(900), abatement=d(700), clinical="resolved"
    )
    c = criterion(catalog, [*eligible, treated], T1, "exc-20", AS_OF)
    assert c.outcome == "fail" and c.until == d(900).replace(year=d(900).year + 5)
    # diagnosed 7 years ago and still recorded active: not "diagnosed within 5 years", but a person looks
    active_old = syn.condition("p1", icd="C50.911", display="Breast cancer", onset=d(2500))
    c = criterion(catalog, [*eligible, active_old], T1, "exc-20", AS_OF)
    assert c.outcome == "review" and any("still recorded active" in n for n in c.review)
