"""Write demo/patients/*.json: synthetic FHIR R4 transaction Bundles, one per patient.

Each record spans years (monthly labs from more than one laboratory, so some values
come in other units), several conditions and medications, with codes from
mappings/. Dates are relative to REFERENCE_DATE; `demo.load` shifts them to the
day they are loaded, so the demo never goes stale.

    python -m demo.generate
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

from demo import synthetic as s

REFERENCE_DATE = date(2026, 11, 23)
OUT = Path(__file__).parent / "patients"


def ago(n: int) -> date:
    return REFERENCE_DATE - timedelta(days=n)


def monthly_labs(
    pid: str,
    months: int,
    rng: random.Random,
    *,
    anc=(2.5, 5.0),
    hb_g_dl=(11.0, 13.0),
    creat_mg_dl=(0.6, 0.9),
    skip_recent: set[str] = frozenset(),
) -> list[dict]:
    """A CBC and chemistry panel every month, alternating two laboratories' units."""
    out: list[dict] = []
    for m in range(months):
        when = ago(5 + 30 * m)
        lab_b = m % 2 == 1  # the second lab reports SI units and counts per uL
        recent = m == 0

        def add(code: str, *args, recent: bool = recent, **kw) -> None:
            if recent and code in skip_recent:
                return
            out.append(s.quantity(pid, code, *args, **kw))

        a = round(rng.uniform(*anc), 2)
        hb = round(rng.uniform(*hb_g_dl), 1)
        cr = round(rng.uniform(*creat_mg_dl), 2)
        if lab_b:
            add("751-8", round(a * 1000), "/uL", when, display="Neutrophils")
            add("718-7", round(hb * 10), "g/L", when, display="Hemoglobin")
            add("14682-9", round(cr * 88.4), "umol/L", when, high=97, display="Creatinine")
            add("14631-6", round(rng.uniform(5, 15)), "umol/L", when, high=21, display="Bilirubin total")
        else:
            add("751-8", a, "10*3/uL", when, display="Neutrophils")
            add("718-7", hb, "g/dL", when, display="Hemoglobin")
            add("2160-0", cr, "mg/dL", when, high=1.1, display="Creatinine")
            add("1975-2", round(rng.uniform(0.3, 0.9), 1), "mg/dL", when, high=1.2, display="Bilirubin total")
        add("731-0", round(rng.uniform(0.9, 1.8), 2), "10*3/uL", when, display="Lymphocytes")
        add("6690-2", round(rng.uniform(4.0, 7.5), 1), "10*3/uL", when, display="Leukocytes")
        add("777-3", round(rng.uniform(160, 320)), "10*3/uL", when, display="Platelets")
        add("1742-6", round(rng.uniform(12, 35)), "U/L", when, high=40, display="ALT")
        add("1920-8", round(rng.uniform(12, 33)), "U/L", when, high=40, display="AST")
    return out


def activity(
    pid: str, when: date, sledai: int, grades: dict[str, str], clinical: int | None = None, serology: int = 0
) -> list[dict]:
    out = [
        s.score(pid, "sledai-2k-total", sledai, when, "SLEDAI-2K total"),
        s.score(pid, "selena-sledai-total", sledai, when, "SELENA-SLEDAI"),
        s.score(pid, "sledai-2k-serology", serology, when, "SLEDAI-2K serology points"),
        s.score(
            pid,
            "sledai-2k-clinical",
            clinical if clinical is not None else sledai - serology,
            when,
            "SLEDAI-2K clinical score",
        ),
    ]
    full = {d: "E" for d in s.BILAG_DOMAINS} | grades
    out.append(s.bilag(pid, full, when))
    return out


def screening(
    pid: str, when: date, *, hbsag: bool = False, hbv_dna: float | None = None, female: bool = True
) -> list[dict]:
    out = [
        s.qualitative(pid, "5196-1", hbsag, when, display="HBsAg"),
        s.qualitative(pid, "13952-7", hbsag, when, display="HBc Ab"),
        s.qualitative(pid, "13955-0", False, when, display="HCV Ab"),
        s.qualitative(pid, "56888-1", False, when, display="HIV 1+2 Ab+p24 Ag", style="interpretation"),
        s.quantity(pid, "72493-0", 20, "[IU]/mL", when, comparator="<", display="CMV DNA"),
        s.qualitative(pid, "24110-9", False, when, display="T. pallidum Ab"),
        s.qualitative(pid, "20507-0", False, when, display="RPR", style="string"),
        s.quantity(pid, "6301-6", 1.0, "{INR}", when, high=1.2, display="INR"),
        s.quantity(pid, "5902-2", 12.4, "s", when, high=13.5, display="PT"),
        s.quantity(pid, "14979-9", 31, "s", when, high=38, display="aPTT"),
        s.quantity(pid, "59408-5", 97, "%", when, display="SpO2"),
    ]
    if hbv_dna is not None:
        out.append(s.quantity(pid, "42595-9", hbv_dna, "[IU]/mL", when, display="HBV DNA"))
    if female:
        out.append(s.qualitative(pid, "2118-8", False, ago(2), display="hCG serum"))
    return out


def serology(pid: str, when: date) -> list[dict]:
    return [
        s.titer(pid, "5048-4", 640, ago(2000)),
        s.quantity(pid, "5130-0", 180, "[IU]/mL", when, high=30, display="dsDNA Ab"),
        s.qualitative(pid, "11090-8", True, ago(1900), display="Smith Ab"),
        s.quantity(pid, "4485-9", 62, "mg/dL", when, low=90, high=180, display="C3"),
        s.quantity(pid, "4498-2", 0.07, "g/L", when, low=0.1, high=0.4, display="C4"),
    ]


def sle(pid: str, onset_days: int) -> dict:
    return s.condition(
        pid, snomed="55464009", icd="M32.9", display="Systemic lupus erythematosus", onset=ago(onset_days)
    )


def therapy_history(pid: str) -> list[dict]:
    """Years of SLE treatment: steroid courses, HCQ, azathioprine then mycophenolate, a belimumab course."""
    return [
        s.med_statement(pid, "8640", "predniSONE 30 MG", ago(2100), ago(1950), status="completed", dose_mg=30),
        s.med_statement(pid, "8640", "predniSONE 10 MG", ago(1950), dose_mg=10),
        s.med_statement(pid, "5521", "Hydroxychloroquine 200 MG Oral Tablet", ago(2150), dose_mg=200, per_day=2),
        s.med_statement(pid, "1256", "Azathioprine 50 MG", ago(1900), ago(1200), status="stopped", dose_mg=100),
        s.med_request(pid, "68149", "Mycophenolate mofetil 500 MG Oral Tablet", ago(1150), dose_mg=1000, per_day=2),
        s.med_statement(pid, "68149", "Mycophenolate mofetil 500 MG", ago(1150), dose_mg=1000, per_day=2),
        s.med_statement(pid, "1092437", "Belimumab 120 MG/ML", ago(700), ago(300), status="completed"),
    ]


def amara() -> list[dict]:
    """41-year-old woman, active refractory SLE, every datum present and in range: likely eligible for all."""
    pid, rng = "demo-amara", random.Random(1)
    return [
        s.patient(pid, str(ago(41 * 365 + 120)), "female", "Amara"),
        sle(pid, 6 * 365),
        s.condition(pid, icd="D64.9", display="Anemia, unspecified", onset=ago(900)),
        *monthly_labs(pid, 36, rng),
        s.quantity(pid, "29463-7", 61, "kg", ago(10), display="Body weight"),
        s.quantity(pid, "10230-1", 61, "%", ago(60), display="LVEF (echo)"),
        *activity(pid, ago(12), 12, {"mucocutaneous": "A", "musculoskeletal": "B", "haematological": "C"}, serology=4),
        *activity(pid, ago(200), 8, {"mucocutaneous": "B", "musculoskeletal": "B"}, serology=4),
        *serology(pid, ago(15)),
        *screening(pid, ago(20)),
        *therapy_history(pid),
        s.immunization(pid, "141", "Influenza, seasonal, injectable", ago(50)),
    ]


def bruno() -> list[dict]:
    """52-year-old man with class IV+V lupus nephritis; rituximab 5 weeks ago (a washout still running)."""
    pid, rng = "demo-bruno", random.Random(2)
    ln_class = s.coded(
        pid,
        "https://trial-matcher.org/fhir/CodeSystem/sle-assessments",
        "isn-rps-class",
        "https://trial-matcher.org/fhir/CodeSystem/sle-assessments",
        "IV+V",
        ago(120),
    )
    return [
        s.patient(pid, str(ago(52 * 365 + 40)), "male", "Bruno"),
        sle(pid, 4 * 365),
        s.condition(pid, icd="M32.14", display="Glomerular disease in SLE", onset=ago(400)),
        s.condition(pid, icd="I10", display="Essential hypertension", onset=ago(3000)),
        ln_class,
        s.score(pid, "nih-ln-activity-index", 9, ago(120), "NIH activity index"),
        s.score(pid, "nih-ln-chronicity-index", 3, ago(120), "NIH chronicity index"),
        s.quantity(pid, "2890-2", 210, "mg/mmol", ago(9), display="UPCR"),
        *monthly_labs(pid, 24, rng, creat_mg_dl=(1.0, 1.3)),
        s.quantity(pid, "29463-7", 190, "[lb_av]", ago(9), display="Body weight"),
        s.quantity(pid, "10230-1", 58, "%", ago(100), display="LVEF (echo)"),
        *activity(pid, ago(9), 16, {"renal": "A", "mucocutaneous": "B"}, serology=4),
        *serology(pid, ago(9)),
        *screening(pid, ago(25), female=False),
        s.med_statement(pid, "8640", "predniSONE 20 MG", ago(400), dose_mg=20),
        s.med_statement(pid, "5521", "Hydroxychloroquine 200 MG", ago(1400), dose_mg=200, per_day=2),
        s.med_statement(pid, "68149", "Mycophenolate mofetil 1000 MG", ago(380), dose_mg=1000, per_day=2),
        s.med_statement(pid, "42316", "Tacrolimus 1 MG", ago(300), dose_mg=2, per_day=2),
        s.med_request(
            pid, "121191", "riTUXimab 10 MG/ML Injectable Solution", ago(50), status="completed", supply_days=14
        ),
    ]


def chen() -> list[dict]:
    """71-year-old woman: too old for three trials; echo and infection screen not on record for the others."""
    pid, rng = "demo-chen", random.Random(3)
    return [
        s.patient(pid, str(ago(71 * 365 + 200)), "female", "Chen"),
        sle(pid, 12 * 365),
        s.condition(pid, icd="M81.0", display="Age-related osteoporosis", onset=ago(2000)),
        *monthly_labs(pid, 12, rng, hb_g_dl=(10.5, 12.0)),
        s.quantity(pid, "29463-7", 55, "kg", ago(20), display="Body weight"),
        *activity(pid, ago(20), 10, {"musculoskeletal": "A"}, serology=2),
        *serology(pid, ago(20)),
        *therapy_history(pid),
    ]


def dana() -> list[dict]:
    """33-year-old woman with chronic hepatitis B viraemia and a recent mRNA vaccine."""
    pid, rng = "demo-dana", random.Random(4)
    return [
        s.patient(pid, str(ago(33 * 365 + 10)), "female", "Dana"),
        sle(pid, 3 * 365),
        s.condition(pid, snomed="61977001", icd="B18.1", display="Chronic viral hepatitis B", onset=ago(900)),
        *monthly_labs(pid, 18, rng),
        s.quantity(pid, "29463-7", 58, "kg", ago(6), display="Body weight"),
        s.quantity(pid, "10230-1", 64, "%", ago(90), display="LVEF (echo)"),
        *activity(pid, ago(14), 11, {"mucocutaneous": "A", "haematological": "B"}, serology=4),
        *serology(pid, ago(14)),
        *screening(pid, ago(14), hbsag=True, hbv_dna=24000),
        *therapy_history(pid),
        s.immunization(pid, "300", "COVID-19 mRNA vaccine, bivalent", ago(300)),
    ]


def eli() -> list[dict]:
    """28-year-old woman newly referred: diagnosis and little else on record."""
    pid, rng = "demo-eli", random.Random(5)
    return [
        s.patient(pid, str(ago(28 * 365 + 77)), "female", "Eli"),
        sle(pid, 400),
        *monthly_labs(pid, 1, rng),
        s.med_statement(pid, "5521", "Hydroxychloroquine 200 MG", ago(380), dose_mg=200, per_day=2),
    ]


def fiona() -> list[dict]:
    """47-year-old woman: breast cancer treated 2 years ago, and asthma."""
    pid, rng = "demo-fiona", random.Random(6)
    return [
        s.patient(pid, str(ago(47 * 365 + 300)), "female", "Fiona"),
        sle(pid, 8 * 365),
        s.condition(
            pid,
            icd="C50.911",
            display="Malignant neoplasm of right female breast",
            onset=ago(900),
            abatement=ago(700),
            clinical="resolved",
        ),
        s.condition(pid, snomed="195967001", icd="J45.40", display="Moderate persistent asthma", onset=ago(9000)),
        *monthly_labs(pid, 24, rng),
        s.quantity(pid, "29463-7", 70, "kg", ago(8), display="Body weight"),
        s.quantity(pid, "10230-1", 59, "%", ago(80), display="LVEF (echo)"),
        *activity(pid, ago(8), 10, {"mucocutaneous": "A"}, serology=4),
        *serology(pid, ago(8)),
        *screening(pid, ago(8)),
        *therapy_history(pid),
    ]


PATIENTS = {
    "demo-amara": amara,
    "demo-bruno": bruno,
    "demo-chen": chen,
    "demo-dana": dana,
    "demo-eli": eli,
    "demo-fiona": fiona,
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for pid, build in PATIENTS.items():
        b = s.bundle(build(), "transaction")
        b["timestamp"] = f"{REFERENCE_DATE.isoformat()}T00:00:00Z"  # the date the record's dates are relative to
        b["meta"] = {
            "tag": [
                {
                    "system": "https://trial-matcher.org/fhir/CodeSystem/demo",
                    "code": "synthetic",
                    "display": "Synthetic demo data - not a real patient",
                }
            ]
        }
        (OUT / f"{pid}.json").write_text(json.dumps(b, indent=1) + "\n", encoding="utf-8")
        print(f"{pid}: {len(b['entry'])} resources")


if __name__ == "__main__":
    main()
