"""Rule family: the current dose (current_dose), prednisone-equivalent for glucocorticoids, summed over the
drugs a criterion names, one ongoing course counted once (the medication history is medications.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.eligibility.logic import CMP, Ctx, Res, Truth
from cds_service.eligibility.medications import (
    dose_mg,
    dose_missing,
    med_evidence,
    medication_reads,
    meds_of,
    unread_sources,
)
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import OPS, Rule, RuleError, RuleParser, check_keys, register
from cds_service.fhir.facts import MedicationFact


@dataclass(frozen=True, slots=True)
class CurrentDose(Rule):
    ingredients: frozenset[str]
    label: str
    op: str
    value: float


def parse_current_dose(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"classes", "ingredients", "op", "value"}, "current_dose")
    ings, label = p.ingredients(arg, "current_dose")
    if arg.get("op") not in OPS:
        raise RuleError("current_dose needs op")
    return CurrentDose("current_dose", ings, label, arg["op"], float(arg["value"]))


def evaluate_current_dose(rule: CurrentDose, ctx: Ctx) -> Res:
    per_drug: dict[str, list[MedicationFact]] = {}
    for m in meds_of(rule.ingredients, ctx):
        if m.ongoing(ctx.as_of):
            per_drug.setdefault(m.ingredient, []).append(m)
    total = 0.0
    ev: list[Evidence] = []
    for records in per_drug.values():
        # One therapy, one count: a statement and the order behind it (or repeated orders) are one
        # ongoing course, never a sum. The newest record sets the dose: an old 40 mg order left active
        # does not outrank today's 10 mg. Records of the same newest day that disagree go to a person.
        doses = [(d, m) for m in records if (d := dose_mg(ctx, m)) is not None]
        if not doses:
            m = records[0]
            return Res(Truth.UNKNOWN, evidence=[med_evidence(m)], missing=[dose_missing(ctx, m)])
        newest = max(m.start or date.min for _, m in doses)
        latest = [(d, m) for d, m in doses if (m.start or date.min) == newest]
        if len({d for d, _ in latest}) > 1:
            listed = ", ".join(f"{d:g} mg/d ({m.resource})" for d, m in latest)
            note = f"current {rule.label}: active records of the same day disagree ({listed})"
            return Res(Truth.REVIEW, evidence=[med_evidence(m, d) for d, m in latest], notes=[note])
        dose, m = latest[0]
        total += dose
        ev.append(med_evidence(m, dose))
    ok = CMP[rule.op](total, rule.value)
    why = [
        f"current {rule.label} {total:g} mg/d prednisone-equivalent {rule.op} {rule.value:g}: {'yes' if ok else 'no'}"
    ]
    # A dose on record already above a ">=" bar, or over a "<=" bar, decides whatever else is unread.
    if (ok and rule.op in (">=", ">")) or (not ok and rule.op in ("<=", "<")):
        return Res(Truth.TRUE if ok else Truth.FALSE, evidence=ev, why=why)
    unread = unread_sources(rule.ingredients, ctx)
    if unread:
        return Res(Truth.UNKNOWN, evidence=ev, missing=[f"current {rule.label}: {'; '.join(unread)}"])
    if ok:
        return Res(Truth.TRUE, evidence=ev, why=why)
    if not ev and ctx.absent != Truth.FALSE:
        return Res(Truth.UNKNOWN, missing=[f"current {rule.label}: none on record"])
    return Res(Truth.FALSE, evidence=ev, why=why)


register("current_dose", parse_current_dose, evaluate_current_dose, medication_reads)  # `meds_of` alone
