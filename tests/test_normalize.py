"""FHIR R4 JSON -> patient facts: statuses, value types, components, validation failures."""

from __future__ import annotations

from datetime import date, timedelta

from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
D = AS_OF - timedelta(days=3)


def facts(catalog, resources, gathered=None):
    return catalog.facts([syn.patient("p1"), *resources], "p1", gathered)


def test_only_final_amended_corrected_count_and_preliminary_is_kept_marked(catalog):
    """A preliminary result is read but marked: it never decides alone (clinical audit 2, NS7)."""
    rs = [
        syn.quantity("p1", "751-8", v, "10*9/L", D, status=s)
        for v, s in [(1, "preliminary"), (2, "entered-in-error"), (3, "amended"), (4, "cancelled"), (5, "registered")]
    ]
    f = facts(catalog, rs)
    assert [(r.value, r.preliminary) for r in f.labs["anc"]] == [(1.0, True), (3.0, False)]


def test_titer_as_string_and_ratio(catalog):
    f = facts(
        catalog, [syn.titer("p1", "5048-4", 160, D), syn.titer("p1", "5048-4", 640, D - timedelta(1), as_ratio=True)]
    )
    assert [r.value for r in f.labs["ana_titer"]] == [160.0, 640.0]
    assert all(r.positive for r in f.labs["ana_titer"])


def test_qualitative_readings(catalog):
    f = facts(
        catalog,
        [
            syn.qualitative("p1", "5196-1", True, D),
            syn.qualitative("p1", "13952-7", False, D, style="interpretation"),
            syn.qualitative("p1", "20507-0", False, D, style="string"),
            syn.qualitative("p1", "24110-9", True, D, style="string"),
        ],
    )
    assert f.labs["hbsag"][0].positive is True
    assert f.labs["anti_hbc"][0].positive is False
    assert f.labs["rpr"][0].positive is False  # "Non-reactive" is not "reactive"
    assert f.labs["tp_ab"][0].positive is True


def test_quantity_positivity_from_reference_range_and_comparator(catalog):
    f = facts(
        catalog,
        [
            syn.quantity("p1", "5130-0", 80, "[IU]/mL", D, high=30),
            syn.quantity("p1", "42595-9", 20, "[IU]/mL", D, comparator="<"),
            syn.quantity("p1", "72493-0", 350, "[IU]/mL", D),
        ],
    )
    assert f.labs["anti_dsdna"][0].positive is True
    assert f.labs["hbv_dna"][0].positive is False and f.labs["hbv_dna"][0].comparator == "<"
    assert f.labs["cmv_dna"][0].positive is True


def test_components_carry_bilag_grades(catalog):
    f = facts(catalog, [syn.bilag("p1", {"renal": "A", "mucocutaneous": "c"}, D)])
    assert f.labs["bilag_renal"][0].answer == "A"
    assert f.labs["bilag_mucocutaneous"][0].answer == "C"


def test_invalid_resource_is_skipped_and_reported(catalog):
    bad = syn.quantity("p1", "751-8", 2, "10*9/L", D)
    bad["status"] = 42  # not a code
    bad["effectiveDateTime"] = "not a date"
    f = facts(catalog, [bad, syn.quantity("p1", "731-0", 1, "10*9/L", D)])
    assert "anc" not in f.labs and f.labs["alc"][0].value == 1.0
    assert f.skipped == [f"Observation/{bad['id']} failed FHIR R4 validation"]


def test_conditions_status_and_verification(catalog):
    f = facts(
        catalog,
        [
            syn.condition("p1", icd="J45.909", display="Asthma", verification="refuted"),
            syn.condition("p1", icd="I48.91", display="AF", clinical="resolved", abatement=D),
            syn.condition("p1", snomed="55464009", display="SLE", verification="provisional"),
        ],
    )
    assert len(f.conditions) == 2
    af = next(c for c in f.conditions if "arrhythmia" in c.groups)
    assert af.active is False and af.abatement == D
    sle = next(c for c in f.conditions if "sle" in c.groups)
    assert sle.confirmed is False


def test_medication_statement_dose_and_route(catalog):
    inhaled = syn.med_statement(
        "p1", "19831", "Budesonide inhaler", D - timedelta(100), dose_mg=0.4, route="Inhalation"
    )
    oral = syn.med_statement("p1", "6902", "Methylprednisolone 8 MG", D - timedelta(100), dose_mg=8, per_day=2)
    f = facts(catalog, [inhaled, oral])
    assert [m.ingredient for m in f.medications] == ["methylprednisolone"]  # inhaled steroid not systemic
    m = f.medications[0]
    assert m.daily_dose_mg == 16 and m.pred_eq_mg == 20 and m.ongoing(AS_OF)


def test_scd_code_rolls_up_with_strength(catalog):
    ms = syn.med_statement(
        "p1", "312615", "predniSONE 20 MG Oral Tablet", D - timedelta(20), dose_mg=1.5, dose_unit="{tbl}"
    )
    m = facts(catalog, [ms]).medications[0]
    assert m.ingredient == "prednisone" and m.daily_dose_mg == 30


def test_medication_request_and_reference(catalog):
    med = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "121191"}]},
    }
    mr = syn.med_request("p1", "0", "x", D - timedelta(10), status="completed", supply_days=1)
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "Medication/med1"}
    f = facts(catalog, [med, mr])
    assert f.medications[0].ingredient == "rituximab"
    assert f.medications[0].end == D - timedelta(9)
    assert {"MedicationStatement", "MedicationRequest", "Immunization"} <= f.gathered


def test_name_fallback_for_unverified_rxnorm(catalog):
    ms = syn.med_statement("p1", "2196099", "upadacitinib 15 MG Extended Release Oral Tablet", D)
    assert facts(catalog, [ms]).medications[0].classes >= {"jak_inhibitors"}


def test_a_record_that_names_only_the_brand(catalog):
    """EHR medication lists and orders often give the trade name alone ("CELLCEPT 500 MG PO TABS") under a
    local or branded code the maps do not hold: the brand finds the ingredient, as its generic name would."""
    for text, ingredient in [
        ("CELLCEPT 500 MG PO TABS", "mycophenolate_mofetil"),
        ("Benlysta 200 mg/mL subcutaneous auto-injector", "belimumab"),
        ("PLAQUENIL 200 MG TABLET", "hydroxychloroquine"),
        ("Truxima (rituximab-abbs) 500 mg/50 mL", "rituximab"),
        ("Lupkynis 7.9 mg capsule", "voclosporin"),
        ("Solu-Medrol 500 mg IV", "methylprednisolone"),
    ]:
        brand_only = syn.med_statement("p1", "9999999", text, D)
        assert facts(catalog, [brand_only]).medications[0].ingredient == ingredient, text
    unknown = syn.med_statement("p1", "9999999", "Restasis 0.05 % ophthalmic emulsion", D)  # eye drops: no brand
    assert facts(catalog, [unknown]).medications == []


def test_r4_json_that_r5_models_would_reject(catalog):
    """R4's MedicationStatement.medicationCodeableConcept does not exist in R5: R4B models read it."""
    from fhir.resources.R4B.medicationstatement import MedicationStatement

    ms = syn.med_statement("p1", "5521", "Hydroxychloroquine", D)
    assert MedicationStatement.model_validate(ms).medicationCodeableConcept.coding[0].code == "5521"
    assert facts(catalog, [ms]).medications[0].ingredient == "hydroxychloroquine"


def test_gathered_kinds_follow_what_was_looked_for(catalog):
    f = catalog.facts([syn.patient("p1")], "p1", gathered={"Observation"})
    assert f.gathered == {"Observation"}


def test_repeated_procedures_are_grouped_each_by_its_own_codes_and_text(catalog):
    """A chart repeats its procedures visit after visit (their groups are worked out once per record): the
    same code with and without specific words, the same words under another code, the same text twice."""
    apheresis = {"system": "http://snomed.info/sct", "code": "127788007", "display": "Apheresis"}

    def proc(i: int, coding: list, text: str | None) -> dict:
        code = {"coding": coding} | ({"text": text} if text else {})
        return {"resourceType": "Procedure", "id": f"pr{i}", "status": "completed", "subject": {"reference":
                "Patient/p1"}, "code": code, "performedDateTime": (D - timedelta(days=i)).isoformat()}  # fmt: skip

    shapes = [([apheresis], None), ([apheresis], "Therapeutic plasma exchange"), ([], "plasma exchange"),
              ([apheresis], None), ([], "Kidney transplant"), ([], "plasma exchange")]  # fmt: skip
    f = facts(catalog, [proc(i, coding, text) for i, (coding, text) in enumerate(shapes)])
    alone = [facts(catalog, [proc(i, coding, text)]).procedures for i, (coding, text) in enumerate(shapes)]
    by_id = {p.resource: p.groups for p in f.procedures}
    assert len(f.procedures) == len(shapes) and by_id == {p.resource: p.groups for a in alone for p in a}
    assert by_id["Procedure/pr0"] == by_id["Procedure/pr3"] == {"apheresis_other"}
    assert "plasmapheresis" in by_id["Procedure/pr1"] and by_id["Procedure/pr2"] == by_id["Procedure/pr5"]


def test_resources_are_found_in_lists_bundles_and_lists_of_bundles():
    from cds_service.fhir.read import iter_resources

    obs, pat = {"resourceType": "Observation", "id": "o"}, {"resourceType": "Patient", "id": "p1"}
    odd = {"resourceType": None, "id": "n"}  # has the key: yielded, as a resource the reader then sets aside
    bundle = {"resourceType": "Bundle", "entry": [{"resource": obs}, {"resource": [pat]}, "junk", {"x": 1}]}
    data = [pat, bundle, [obs, [pat]], odd, {"id": "no type"}, "junk", 7, {"resourceType": "Bundle"}]
    assert list(iter_resources(data)) == [pat, obs, obs, pat, odd]
    assert list(iter_resources(bundle)) == [obs] and list(iter_resources(obs)) == [obs]
