"""Every code in mappings/ has the shape its code system guarantees (a typo hides patients)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.codes import (
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    atc_valid,
    canonical_system,
    cvx_valid,
    icd10cm_valid,
    loinc_valid,
    rxnorm_valid,
    snomed_valid,
)
from cds_service.fhir.mappings import load_mappings
from cds_service.fhir.read import _codings
from cds_service.settings import REPO_ROOT

LOINC_ANSWER = re.compile(r"^LA\d{1,6}-\d$")


def test_check_digit_algorithms_on_known_codes():
    assert loinc_valid("751-8") and loinc_valid("2160-0") and loinc_valid("98979-8")
    assert not loinc_valid("751-9") and not loinc_valid("2160-1") and not loinc_valid("7518")
    assert snomed_valid("55464009") and snomed_valid("308751000119106")
    assert not snomed_valid("55464008")  # one digit off
    # The reference's second DCIS candidate fails Verhoeff: it cannot be a real SCTID.
    assert not snomed_valid("397016007")
    assert (
        icd10cm_valid("M32.14") and icd10cm_valid("O9A.1") and not icd10cm_valid("M3214") and not icd10cm_valid("U07")
    )
    assert rxnorm_valid("8640") and not rxnorm_valid("08640") and not rxnorm_valid("86a0")
    assert cvx_valid("03") and cvx_valid("207") and not cvx_valid("2077")
    assert atc_valid("L04AA06") and atc_valid("L03AA") and not atc_valid("L04A06")


def test_every_observation_code(catalog):
    for key, var in catalog.mappings.variables.items():
        assert var.codes, key
        for c in var.codes:
            if c.system == LOINC:
                assert loinc_valid(c.code), f"{key}: LOINC {c.code} fails the mod-10 check digit"
            else:
                declared = {catalog.mappings.observations.local_system, *catalog.mappings.observations.site_systems}
                assert c.system in declared, f"{key}: unexpected system {c.system} (a site's own: site_systems)"
        for answer in var.answers:
            assert LOINC_ANSWER.match(answer) or snomed_valid(answer) or re.match(r"^[IV+]+$", answer), (key, answer)


def test_qualitative_answer_codes(catalog):
    q = catalog.mappings.observations.qualitative
    for c in q.positive_codes + q.negative_codes:
        if c.system == SNOMED:
            assert snomed_valid(c.code), c.code
        elif c.system == LOINC:
            assert LOINC_ANSWER.match(c.code), c.code


def test_every_condition_code(catalog):
    for key, g in catalog.mappings.conditions.groups.items():
        assert g.snomed or g.icd10cm or g.icd10cm_ranges or g.words, f"{key} matches nothing"
        for code in g.snomed:
            assert snomed_valid(code), f"{key}: SNOMED {code} fails the Verhoeff check"
        for code in g.icd10cm + g.icd10cm_exclude:
            assert icd10cm_valid(code), f"{key}: ICD-10-CM {code}"
        for r in g.icd10cm_ranges:
            lo, hi = r.split("-")
            assert icd10cm_valid(lo) and icd10cm_valid(hi) and lo <= hi, f"{key}: range {r}"


def test_every_medication_code(catalog):
    meds = catalog.mappings.medications
    for key, ing in meds.ingredients.items():
        assert ing.rxnorm or ing.atc or ing.cvx or ing.names, f"{key} matches nothing"
        for code in ing.rxnorm:
            assert rxnorm_valid(code), f"{key}: RxNorm {code}"
        for code in ing.cvx:
            assert cvx_valid(code), f"{key}: CVX {code}"
        for code in ing.atc:
            assert atc_valid(code), f"{key}: ATC {code}"
    for code in meds.products:
        assert rxnorm_valid(code)
    for code in meds.non_systemic_routes.snomed:
        assert snomed_valid(code)


def test_no_code_maps_to_two_ingredients(catalog):
    seen: dict[str, str] = {}
    for key, ing in catalog.mappings.medications.ingredients.items():
        for code in ing.rxnorm + [f"cvx:{c}" for c in ing.cvx]:
            assert code not in seen, f"{code} is both {seen[code]} and {key}"
            seen[code] = key


@pytest.mark.parametrize(
    ("code", "groups"),
    [
        ("M32.14", {"sle", "lupus_nephritis"}),
        ("M32.0", {"drug_induced_lupus"}),
        ("C44.91", {"malignancy", "skin_bcc_scc"}),
        ("C50.911", {"malignancy"}),
        ("D84.821", set()),  # secondary immunodeficiency is not primary
        ("D84.81", set()),
        ("D84.822", {"unspecified_immunodeficiency"}),  # due to external causes: a person decides
        ("D84.9", {"unspecified_immunodeficiency"}),  # immunosuppressed NOS
        ("D84.0", {"primary_immunodeficiency"}),
        ("D83.9", {"primary_immunodeficiency"}),
        ("O09.90", {"pregnancy"}),
        ("O92.13", {"lactation"}),  # cracked nipple associated with lactation
        ("O92.3", set()),  # agalactia: not breastfeeding (clinical audit 2, NH2)
        ("F32.9", {"psychiatric_disorder"}),
        ("F11.20", {"substance_abuse"}),
        ("Z94.0", {"solid_organ_transplant"}),
        ("Z94.84", {"stem_cell_transplant"}),
    ],
)
def test_icd10cm_prefixes_and_ranges(catalog, code, groups):
    assert set(catalog.mappings.condition_groups(ICD10CM, code)) == groups
    # claims feeds send codes without the dot: "M320" is M32.0 (not SLE), "D84821" is D84.821
    dotless = code.replace(".", "")
    assert set(catalog.mappings.condition_groups(ICD10CM, dotless)) == groups, dotless
    assert set(catalog.mappings.condition_groups(ICD10CM, f" {dotless.lower()} ")) == groups, dotless
    assert set(catalog.mappings.condition_groups(ICD10CM, f"{code}.")) == groups  # "M32.0." / "M320."
    assert set(catalog.mappings.condition_groups(ICD10CM, code.replace(".", ".."))) == groups  # "M32..0"
    assert set(catalog.mappings.condition_groups(ICD10CM, f"{code[:3]} {code[4:]}".strip())) == groups


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [
        ("urn:oid:2.16.840.1.113883.6.1", LOINC),
        ("2.16.840.1.113883.6.1", LOINC),
        ("http://loinc.org/", LOINC),
        ("urn:oid:2.16.840.1.113883.6.96", SNOMED),
        ("http://snomed.info/sct/731000124108/version/20230301", SNOMED),
        ("http://snomed.info/sct/900000000000207008", SNOMED),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10CM),
        ("http://hl7.org/fhir/sid/icd-10-cm/", ICD10CM),
        ("urn:oid:2.16.840.1.113883.6.88", RXNORM),
        ("urn:oid:2.16.840.1.113883.12.292", "http://hl7.org/fhir/sid/cvx"),
        ("urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0", "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0"),
        ("http://snomed.info/sctx", "http://snomed.info/sctx"),
        ("http://snomed.info/sct/local-codes", "http://snomed.info/sct/local-codes"),  # a site's own
        ("URN:OID:2.16.840.1.113883.6.1 ", LOINC),
        ("https://snomed.info/sct", SNOMED),
        ("HTTP://SNOMED.INFO/SCT", SNOMED),
        ("https://snomed.info/sct/", SNOMED),
        ("HTTPS://HL7.ORG/FHIR/SID/ICD-10-CM/", ICD10CM),
    ],
)
def test_a_system_as_records_spell_it_reads_as_the_maps_write_it(catalog, spelled, canonical):
    """Registered OIDs, a trailing slash and a SNOMED CT edition in the system name the system the maps use;
    anything else (a site's own OID, a look-alike) stays as it is."""
    assert canonical_system(spelled) == canonical
    code = {"coding": [{"system": spelled, "code": "x"}]}
    assert _codings(code)[0][0] == canonical


def test_every_lupus_nephritis_concept_is_sle(catalog):
    """Lupus nephritis is SLE by definition: a problem list holding only an LN concept records SLE."""
    groups = catalog.mappings.conditions.groups
    assert set(groups["lupus_nephritis"].snomed) <= set(groups["sle"].snomed)


SITE = "https://lab.hospital.example.org/fhir/CodeSystem/lis"


def _site_maps(tmp_path: Path, systems: list[str]) -> tuple[Path, str, str]:
    """A copy of the maps with `systems` declared as the site's and a site code added to the first quantity
    variable: the folder, the variable and its canonical unit."""
    maps = tmp_path / "maps"
    shutil.copytree(REPO_ROOT / "mappings", maps)
    data = yaml.safe_load((maps / "observations.yaml").read_text())
    key, var = next((k, v) for k, v in data["variables"].items() if v.get("kind") == "quantity" and v.get("unit"))
    data["site_systems"] = systems
    var["codes"].append({"system": SITE, "code": "LOCAL-1", "display": "the site's own code"})
    (maps / "observations.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return maps, key, var["unit"]


def test_a_sites_own_lab_code_is_read_once_its_system_is_declared(tmp_path):
    maps, key, unit = _site_maps(tmp_path, [SITE])
    catalog = Catalog.load(maps, REPO_ROOT / "trials")
    test_every_observation_code(catalog)  # declared: not taken for a mistyped system URL
    quantity = {"value": 5, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p"},
           "code": {"coding": [{"system": SITE, "code": "LOCAL-1"}]}, "effectiveDateTime": "2026-11-01",
           "valueQuantity": quantity}  # fmt: skip
    facts = catalog.facts([{"resourceType": "Patient", "id": "p"}, obs], "p")
    assert [(r.value, r.resource) for r in facts.labs[key]] == [(5.0, "Observation/o1")]
    undeclared = Catalog.load(_site_maps(tmp_path / "b", [])[0], REPO_ROOT / "trials")
    with pytest.raises(AssertionError, match="unexpected system"):
        test_every_observation_code(undeclared)


def test_a_site_system_that_is_not_a_uri_is_refused(tmp_path):
    with pytest.raises(ValueError, match="site_systems"):
        load_mappings(_site_maps(tmp_path, ["lis codes"])[0])
