"""Synthetic FHIR R4 resources for tests, demo patients and benchmarks.

Nothing here is real patient data. The builders write plain R4 JSON (dicts) the
way EHRs send it, including the variations the normalizer must cope with
(units other than the canonical one, titers as strings, qualitative results as
SNOMED codes or interpretation flags).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import date, timedelta
from typing import Any

from cds_service.fhir.codes import ICD10CM, LOINC, RXNORM, SNOMED, UCUM

LOCAL = "https://trial-matcher.org/fhir/CodeSystem/sle-assessments"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_ids = itertools.count(1)


def _id(prefix: str, pid: str) -> str:
    """Ids unique per patient, so several patients can share one FHIR server."""
    return f"{pid}-{prefix}-{next(_ids)}"


def patient(pid: str = "p1", birth: str = "1985-06-15", gender: str = "female", name: str = "Test") -> dict:
    return {
        "resourceType": "Patient",
        "id": pid,
        "birthDate": birth,
        "gender": gender,
        "name": [{"family": name, "given": ["Synthetic"]}],
    }


def _obs_base(pid: str, system: str, code: str, display: str, when: date | str, status: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": _id("obs", pid),
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory" if system == LOINC else "exam",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": str(when),
    }


def quantity(
    pid: str,
    loinc: str,
    value: float,
    unit: str,
    when: date | str,
    *,
    display: str = "",
    high: float | None = None,
    low: float | None = None,
    comparator: str | None = None,
    status: str = "final",
    system: str = LOINC,
) -> dict:
    obs = _obs_base(pid, system, loinc, display or loinc, when, status)
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    obs["valueQuantity"] = q
    if high is not None or low is not None:
        rr: dict[str, Any] = {}
        if low is not None:
            rr["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            rr["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        obs["referenceRange"] = [rr]
    return obs


def qualitative(
    pid: str, loinc: str, positive: bool, when: date | str, *, display: str = "", style: str = "snomed"
) -> dict:
    """A presence test result, written as a SNOMED answer, an interpretation flag or a string."""
    obs = _obs_base(pid, LOINC, loinc, display or loinc, when, "final")
    if style == "snomed":
        code, text = ("10828004", "Positive") if positive else ("260385009", "Negative")
        obs["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": code, "display": text}], "text": text}
    elif style == "interpretation":
        obs["valueString"] = "see interpretation"
        obs["interpretation"] = [{"coding": [{"system": V3_INTERP, "code": "POS" if positive else "NEG"}]}]
    else:
        obs["valueString"] = "Reactive" if positive else "Non-reactive"
    return obs


def titer(pid: str, loinc: str, denominator: int, when: date | str, *, as_ratio: bool = False) -> dict:
    obs = _obs_base(pid, LOINC, loinc, "Nuclear Ab [Titer] in Serum by Immunofluorescence", when, "final")
    if as_ratio:
        obs["valueRatio"] = {"numerator": {"value": 1}, "denominator": {"value": denominator}}
    else:
        obs["valueString"] = f"1:{denominator}"
    return obs


def score(pid: str, code: str, value: float, when: date | str, display: str = "") -> dict:
    obs = _obs_base(pid, LOCAL, code, display or code, when, "final")
    obs["valueQuantity"] = {"value": value, "unit": "{score}", "system": UCUM, "code": "{score}"}
    obs["category"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}
    ]
    return obs


BILAG_DOMAINS = (
    "constitutional",
    "mucocutaneous",
    "neuropsychiatric",
    "musculoskeletal",
    "cardiorespiratory",
    "gastrointestinal",
    "ophthalmic",
    "renal",
    "haematological",
)


def bilag(pid: str, grades: dict[str, str], when: date | str) -> dict:
    """One BILAG-2004 panel Observation with a component per organ domain."""
    obs = _obs_base(pid, LOCAL, "bilag-2004", "BILAG-2004 index", when, "final")
    obs["component"] = [
        {
            "code": {"coding": [{"system": LOCAL, "code": f"bilag-2004-{d}"}]},
            "valueCodeableConcept": {"coding": [{"system": LOCAL, "code": g}], "text": g},
        }
        for d, g in grades.items()
    ]
    return obs


def coded(pid: str, system: str, code: str, answer_system: str, answer: str, when: date | str) -> dict:
    obs = _obs_base(pid, system, code, code, when, "final")
    obs["valueCodeableConcept"] = {"coding": [{"system": answer_system, "code": answer}], "text": answer}
    return obs


def condition(
    pid: str,
    *,
    snomed: str | None = None,
    icd: str | None = None,
    display: str = "",
    onset: date | str | None = None,
    abatement: date | str | None = None,
    clinical: str = "active",
    verification: str = "confirmed",
) -> dict:
    codings = []
    if snomed:
        codings.append({"system": SNOMED, "code": snomed, "display": display})
    if icd:
        codings.append({"system": ICD10CM, "code": icd, "display": display})
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": _id("cond", pid),
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
        },
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        },
        "code": {"coding": codings, "text": display},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if onset:
        res["onsetDateTime"] = str(onset)
    if abatement:
        res["abatementDateTime"] = str(abatement)
    return res


def med_statement(
    pid: str,
    rxnorm: str,
    display: str,
    start: date | str,
    end: date | str | None = None,
    *,
    status: str = "active",
    dose_mg: float | None = None,
    per_day: int = 1,
    dose_unit: str = "mg",
    route: str | None = None,
) -> dict:
    period: dict[str, str] = {"start": str(start)}
    if end:
        period["end"] = str(end)
    res: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": _id("ms", pid),
        "status": status,
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": rxnorm, "display": display}],
            "text": display,
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectivePeriod": period,
    }
    if dose_mg is not None:
        dosage: dict[str, Any] = {
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": dose_unit, "system": UCUM, "code": dose_unit}}],
        }
        if route:
            dosage["route"] = {"text": route}
        res["dosage"] = [dosage]
    return res


def med_request(
    pid: str,
    rxnorm: str,
    display: str,
    authored: date | str,
    *,
    status: str = "active",
    dose_mg: float | None = None,
    per_day: int = 1,
    supply_days: int | None = None,
) -> dict:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": _id("mr", pid),
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": rxnorm, "display": display}],
            "text": display,
        },
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": str(authored),
    }
    if dose_mg is not None:
        res["dosageInstruction"] = [
            {
                "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}}],
            }
        ]
    if supply_days:
        res["dispenseRequest"] = {
            "expectedSupplyDuration": {"value": supply_days, "unit": "days", "system": UCUM, "code": "d"}
        }
    return res


def immunization(pid: str, cvx: str, display: str, when: date | str) -> dict:
    return {
        "resourceType": "Immunization",
        "id": _id("imm", pid),
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx, "display": display}]},
        "patient": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": str(when),
    }


def days_ago(as_of: date, n: int) -> date:
    return as_of - timedelta(days=n)


def eligible_patient(as_of: date, pid: str = "p1", birth: str = "1985-06-15", gender: str = "female") -> list[dict]:
    """A refractory-SLE patient whose data are all present and in range for the five seed trials.

    Some values are deliberately in non-canonical units (g/dL, mg/dL, cells 10*3/uL).
    """
    d = lambda n: days_ago(as_of, n)  # noqa: E731
    res = [
        patient(pid, birth, gender),
        condition(pid, snomed="55464009", icd="M32.9", display="Systemic lupus erythematosus", onset=d(5 * 365)),
        # activity and serology
        score(pid, "sledai-2k-total", 10, d(7), "SLEDAI-2K total"),
        score(pid, "sledai-2k-serology", 4, d(7), "SLEDAI-2K serology points"),
        score(pid, "sledai-2k-clinical", 6, d(7), "SLEDAI-2K clinical score"),
        score(pid, "selena-sledai-total", 10, d(7), "SELENA-SLEDAI"),
        bilag(
            pid,
            {
                "constitutional": "D",
                "mucocutaneous": "A",
                "neuropsychiatric": "E",
                "musculoskeletal": "B",
                "cardiorespiratory": "E",
                "gastrointestinal": "E",
                "ophthalmic": "E",
                "renal": "D",
                "haematological": "C",
            },
            d(7),
        ),
        titer(pid, "5048-4", 320, d(200)),
        quantity(pid, "5130-0", 120, "[IU]/mL", d(10), high=30, display="dsDNA Ab"),
        qualitative(pid, "11090-8", True, d(400), display="Smith Ab"),
        quantity(pid, "4485-9", 60, "mg/dL", d(10), low=90, high=180, display="C3"),
        quantity(pid, "4498-2", 8, "mg/dL", d(10), low=10, high=40, display="C4"),
        # haematology, chemistry, coagulation
        quantity(pid, "751-8", 3.1, "10*3/uL", d(5), display="Neutrophils"),
        quantity(pid, "731-0", 1.2, "10*3/uL", d(5), display="Lymphocytes"),
        quantity(pid, "6690-2", 5.6, "10*3/uL", d(5), display="Leukocytes"),
        quantity(pid, "777-3", 210, "10*3/uL", d(5), display="Platelets"),
        quantity(pid, "718-7", 11.8, "g/dL", d(5), display="Hemoglobin"),
        quantity(pid, "1742-6", 24, "U/L", d(5), high=40, display="ALT"),
        quantity(pid, "1920-8", 21, "U/L", d(5), high=40, display="AST"),
        quantity(pid, "1975-2", 0.6, "mg/dL", d(5), high=1.2, display="Bilirubin total"),
        quantity(pid, "2160-0", 0.8, "mg/dL", d(5), high=1.1, display="Creatinine"),
        quantity(pid, "29463-7", 64, "kg", d(5), display="Body weight"),
        quantity(pid, "6301-6", 1.0, "{INR}", d(5), high=1.2, display="INR"),
        quantity(pid, "5902-2", 12.1, "s", d(5), high=13.5, display="PT"),
        quantity(pid, "14979-9", 31, "s", d(5), high=38, display="aPTT"),
        quantity(pid, "10230-1", 62, "%", d(20), display="LVEF"),
        quantity(pid, "59408-5", 98, "%", d(5), display="SpO2"),
        # infection screening
        qualitative(pid, "5196-1", False, d(20), display="HBsAg"),
        qualitative(pid, "13952-7", False, d(20), display="HBc Ab"),
        qualitative(pid, "13955-0", False, d(20), display="HCV Ab"),
        qualitative(pid, "56888-1", False, d(20), display="HIV 1+2 Ab+p24 Ag"),
        quantity(pid, "72493-0", 20, "[IU]/mL", d(20), comparator="<", display="CMV DNA"),
        qualitative(pid, "24110-9", False, d(20), display="T. pallidum Ab"),
        qualitative(pid, "20507-0", False, d(20), display="RPR", style="string"),
        # medications: on prednisone 10 mg/d, hydroxychloroquine and mycophenolate; belimumab stopped 6 months ago
        med_statement(pid, "8640", "predniSONE 10 MG", d(2 * 365), dose_mg=10),
        med_statement(pid, "5521", "Hydroxychloroquine 200 MG", d(3 * 365), dose_mg=200, per_day=2),
        med_statement(pid, "68149", "Mycophenolate mofetil 1000 MG", d(2 * 365), dose_mg=1000, per_day=2),
        med_statement(pid, "1092437", "Belimumab 10 MG/KG infusion", d(500), d(180), status="completed"),
    ]
    if gender == "female":
        res.append(qualitative(pid, "2118-8", False, d(3), display="hCG serum"))
    return res


def bundle(resources: list[dict], kind: str = "collection") -> dict:
    """Wrap resources in a Bundle; a `transaction` Bundle PUTs each resource by id."""
    entries = []
    for r in resources:
        e: dict[str, Any] = {
            "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['resourceType'] + r['id'])}",
            "resource": r,
        }
        if kind == "transaction":
            e["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        entries.append(e)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
