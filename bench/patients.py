"""Synthetic patients of any size with a realistic mix: years of labs (mapped and unmapped), conditions,
medications. Deterministic for a given size."""

from __future__ import annotations

import random
from datetime import date, timedelta

from demo import synthetic as s

MAPPED_LABS = [
    ("751-8", "10*3/uL", 2.0, 6.0),
    ("731-0", "10*3/uL", 0.8, 2.5),
    ("6690-2", "10*3/uL", 4, 9),
    ("777-3", "10*3/uL", 150, 350),
    ("718-7", "g/dL", 10, 14),
    ("1742-6", "U/L", 10, 45),
    ("1920-8", "U/L", 10, 40),
    ("1975-2", "mg/dL", 0.2, 1.1),
    ("2160-0", "mg/dL", 0.6, 1.2),
    ("6301-6", "{INR}", 0.9, 1.2),
    ("5902-2", "s", 11, 14),
    ("59408-5", "%", 94, 99),
    ("4485-9", "mg/dL", 60, 160),
    ("4498-2", "mg/dL", 8, 40),
    ("29463-7", "kg", 55, 80),
]
UNMAPPED_LABS = [  # routine results no criterion reads
    ("2093-3", "mg/dL", 150, 240),
    ("2345-7", "mg/dL", 70, 140),
    ("2951-2", "mmol/L", 135, 145),
    ("2823-3", "mmol/L", 3.5, 5.1),
    ("8480-6", "mm[Hg]", 100, 150),
    ("8462-4", "mm[Hg]", 60, 95),
    ("8867-4", "/min", 55, 100),
    ("8310-5", "Cel", 36, 38),
]


def make_patient(n: int, pid: str | None = None, as_of: date = date(2026, 11, 23)) -> list[dict]:
    pid = pid or f"bench-{n}"
    rng = random.Random(n)
    res: list[dict] = [s.patient(pid, "1980-04-02", "female", "Bench")]
    n_cond = max(2, n // 40)
    n_med = max(3, n // 25)
    res.append(s.condition(pid, snomed="55464009", icd="M32.9", display="SLE", onset=as_of - timedelta(days=2000)))
    for _ in range(n_cond - 1):
        code, disp = rng.choice(
            [
                ("I10", "Hypertension"),
                ("E78.5", "Hyperlipidemia"),
                ("J45.40", "Asthma"),
                ("K21.9", "GERD"),
                ("M81.0", "Osteoporosis"),
                ("D64.9", "Anemia"),
            ]
        )
        res.append(
            s.condition(
                pid,
                icd=code,
                display=disp,
                onset=as_of - timedelta(days=rng.randint(30, 4000)),
                clinical=rng.choice(["active", "resolved"]),
            )
        )
    meds = [
        ("8640", "predniSONE 10 MG", 10),
        ("5521", "Hydroxychloroquine 200 MG", 200),
        ("68149", "Mycophenolate mofetil 500 MG", 1000),
        ("617314", "Atorvastatin 10 MG", 10),
        ("197361", "Amlodipine 5 MG", 5),
    ]
    for i in range(n_med):
        rx, disp, dose = meds[i % len(meds)]
        start = as_of - timedelta(days=rng.randint(60, 3000))
        if i % 3 == 0:
            res.append(
                s.med_request(
                    pid, rx, disp, start, status=rng.choice(["active", "completed"]), dose_mg=dose, supply_days=90
                )
            )
        else:
            end = None if i % 2 else start + timedelta(days=rng.randint(30, 400))
            res.append(
                s.med_statement(
                    pid, rx, disp, start, end, status="active" if end is None else "completed", dose_mg=dose
                )
            )
    while len(res) < n:
        when = as_of - timedelta(days=rng.randint(0, 5 * 365))
        if rng.random() < 0.7:
            code, unit, lo, hi = rng.choice(MAPPED_LABS)
        else:
            code, unit, lo, hi = rng.choice(UNMAPPED_LABS)
        res.append(s.quantity(pid, code, round(rng.uniform(lo, hi), 2), unit, when, high=hi))
    return res[:n]
