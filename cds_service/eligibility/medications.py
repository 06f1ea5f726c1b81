"""Rule family: medication history. Washouts and current use (medication), treatment history
(treated); the current prednisone-equivalent dose (current_dose) is doses.py.

MedicationStatement, MedicationRequest and Immunization are separate sources: what any of them shows
decides; "none (within the window) on record" needs every one that could hold the drug. One therapy
recorded twice (a statement and the order behind it, repeated orders) counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal, Protocol

from cds_service.eligibility.logic import CMP, Ctx, Res, Truth, max_until
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import OPS, Rule, RuleError, RuleParser, Window, check_keys, register
from cds_service.fhir.facts import MEDICATION_SOURCES, MedicationFact

SOURCE_NAMES = {
    "MedicationStatement": "medication statements (MedicationStatement)",
    "MedicationRequest": "medication orders (MedicationRequest)",
    "MedicationAdministration": "administrations (MedicationAdministration)",
    "MedicationDispense": "dispenses (MedicationDispense)",
    "Immunization": "immunizations (Immunization)",
}


@dataclass(frozen=True, slots=True)
class MedicationRule(Rule):
    ingredients: frozenset[str]
    label: str
    within: Window | None
    dose_op: str | None
    dose_value: float | None
    if_ongoing: Literal["match", "review"]
    ongoing_note: str | None
    match_review: str | None = None  # a match needs a person (e.g. a vaccine of unrecorded type)
    dose_per_kg: bool = False  # dose in mg/kg/day, with body weight from the record
    weight_at_dose: bool = False  # `dose_per_kg`: the body weight nearest the dose, not today's
    route: str | None = None  # only courses given by this route (a key of medications.yaml `routes`)


@dataclass(frozen=True, slots=True)
class Treated(Rule):
    ingredients: frozenset[str]
    label: str
    min_duration: Window | None
    min_distinct: int


def parse_medication(p: RuleParser, arg: Any) -> Rule:
    check_keys(
        arg,
        {
            "classes",
            "ingredients",
            "within",
            "dose",
            "dose_per_kg",
            "if_ongoing",
            "ongoing_note",
            "match_review",
            "route",
        },
        "medication",
    )
    ings, label = p.ingredients(arg, "medication")
    dose = arg.get("dose") or {}
    at_dose = "dose_per_kg" in arg
    if at_dose:
        dose = _dose_per_kg(arg)
    if dose and (dose.get("op") not in OPS or "value" not in dose or set(dose) - {"op", "value", "per_kg"}):
        raise RuleError(
            "medication.dose takes op, value and optionally per_kg: true (mg/day, prednisone-equivalent for "
            "glucocorticoids; mg/kg/day with per_kg)"
        )
    if dose.get("per_kg"):
        p.variables_used.add("weight")
    route = arg.get("route")
    if route is not None and route not in p.mappings.medications.routes:
        raise RuleError(f"medication.route {route!r} is not a route of mappings/medications.yaml")
    if_ongoing = arg.get("if_ongoing", "match")
    if if_ongoing not in ("match", "review"):
        raise RuleError("medication.if_ongoing is 'match' or 'review'")
    return MedicationRule(
        "medication",
        ings,
        label,
        Window.lookback(arg.get("within")),
        dose.get("op"),
        float(dose["value"]) if dose else None,
        if_ongoing,
        arg.get("ongoing_note"),
        arg.get("match_review"),
        bool(dose.get("per_kg")),
        at_dose,
        route,
    )


def _dose_per_kg(arg: dict) -> dict:
    """`dose_per_kg: {op, value}`: mg/kg/day at the time of each course ("above 1 mg/kg/day at some time in
    the last 6 months"), the dose divided by the weight on record nearest that course."""
    per_kg = arg["dose_per_kg"]
    if "dose" in arg or not isinstance(per_kg, dict) or set(per_kg) != {"op", "value"} or per_kg["op"] not in OPS:
        raise RuleError(
            "medication.dose_per_kg takes op and value (mg/kg/day, prednisone-equivalent for glucocorticoids, "
            "with the body weight nearest the dose); give it instead of dose"
        )
    return {**per_kg, "per_kg": True}


def parse_treated(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"classes", "ingredients", "min_duration", "min_distinct"}, "treated")
    ings, label = p.ingredients(arg, "treated")
    return Treated("treated", ings, label, Window.parse(arg.get("min_duration")), int(arg.get("min_distinct", 1)))


def meds_of(ings: frozenset[str], ctx: Ctx) -> list[MedicationFact]:
    return [m for m in ctx.facts.medications if m.ingredient in ings]


def med_evidence(m: MedicationFact, dose: float | None = None) -> Evidence:
    span = f"{m.start.isoformat() if m.start else '?'} to {m.end.isoformat() if m.end else 'ongoing'}"
    return Evidence(
        resource=m.resource,
        label=m.display,
        value=dose,
        unit="mg/d" if dose is not None else None,
        date=m.last_use() or m.start,
        note=f"{m.status}, {span}",
    )


def unread_sources(ingredients: frozenset[str], ctx: Ctx) -> list[str]:
    """What keeps "none on record" from being said: sources that could hold these drugs but were not read,
    and records in read sources whose drug could not be identified (an unresolvable medicationReference)."""
    needed = list(MEDICATION_SOURCES)
    if not ingredients.isdisjoint(ctx.m.vaccine_ingredients):
        needed.append("Immunization")
    out = [f"{SOURCE_NAMES[s]} not read" for s in needed if s not in ctx.facts.gathered]
    for s in needed:
        n = ctx.facts.unread.get(s, 0)
        if n and s in ctx.facts.gathered:
            out.append(f"{n} of the {SOURCE_NAMES[s]} could not be identified (not valid FHIR, or drug not named or "
                       "not resolvable)")  # fmt: skip
    return out


def dose_mg(ctx: Ctx, m: MedicationFact) -> float | None:
    """mg/day as criteria compare it: prednisone-equivalent for glucocorticoids (None without a verified
    factor: deflazacort 24 mg is not 24 mg of prednisone), the plain daily dose for anything else."""
    if m.ingredient in ctx.m.steroid_ingredients:
        return m.pred_eq_mg
    return m.daily_dose_mg


def _weight_kg(ctx: Ctx) -> float | None:
    """The newest body weight inside its recency window, in kg (the maps convert lb and g)."""
    since = ctx.as_of - timedelta(days=ctx.m.variables["weight"].current_days)
    return next(
        (
            r.value
            for r in ctx.facts.labs.get("weight", ())
            if r.value and r.when is not None and since <= r.when <= ctx.as_of
        ),
        None,
    )


_NEAR_DAYS = 90  # a weight this far from a course still stands for the weight at that dose


def _weight_near(ctx: Ctx, m: MedicationFact) -> float | None:
    """The body weight (kg) nearest the course's dates (0 days inside it), at most _NEAR_DAYS away: a dose of
    last spring is divided by last spring's weight, not today's."""
    if m.start is None:
        return None
    end = min(m.last_use() or ctx.as_of, ctx.as_of) if not m.ongoing(ctx.as_of) else ctx.as_of
    best: tuple[int, float] | None = None
    for r in ctx.facts.labs.get("weight", ()):
        if not r.value or r.when is None or r.when > ctx.as_of:
            continue
        gap = 0 if m.start <= r.when <= end else min(abs((r.when - m.start).days), abs((r.when - end).days))
        if gap <= _NEAR_DAYS and (best is None or gap < best[0]):
            best = (gap, r.value)
    return best[1] if best else None


def evaluate_medication(rule: MedicationRule, ctx: Ctx) -> Res:
    since = ctx.since(rule.within) if rule.within else None
    hits: list[Res] = []
    review: list[Res] = []
    unknown: list[Res] = []
    set_aside: list[Res] = []  # uses on record that do not qualify (the dose, the route): said, with evidence
    outside = False
    for m in meds_of(rule.ingredients, ctx):
        dose = dose_mg(ctx, m)
        ev = med_evidence(m, dose)
        if rule.dose_per_kg and dose is not None:
            weight = _weight_near(ctx, m) if rule.weight_at_dose else _weight_kg(ctx)
            if weight is None:
                near = f" within {_NEAR_DAYS} days of {m.display}'s dates" if rule.weight_at_dose else ""
                missing = f"body weight{near}, for a dose in mg/kg/day"
                unknown.append(Res(Truth.UNKNOWN, evidence=[ev], missing=[missing]))
                continue
            dose = dose / weight
        last = m.last_use()
        ongoing = m.ongoing(ctx.as_of)
        if m.end_unknown and since is not None and not ongoing:
            latest = min(m.end_bound or ctx.as_of, ctx.as_of)  # the last day it can have been taken
            if latest < since:
                outside = True
                continue
            if m.start is None or m.start < since:  # stopped at a date not recorded: maybe inside the window
                note = f"{m.display}: stopped, stop date not recorded (last use {m.start or '?'} to {latest})"
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{note}; within {rule.within}?"]))
                continue
            last = latest
        if not ongoing and last is None:
            review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: dates of use not recorded"]))
            continue
        if not ongoing and since is not None and last < since:  # type: ignore[operator]
            outside = True  # the window first: a course stopped years ago needs no dose
            continue
        if rule.dose_op is not None:
            if dose is None:
                unknown.append(Res(Truth.UNKNOWN, evidence=[ev], missing=[dose_missing(ctx, m)]))
                continue
            if not CMP[rule.dose_op](dose, rule.dose_value):
                why = f"{m.display}: {dose:g} {'mg/kg/d' if rule.dose_per_kg else 'mg/d'}, not {rule.dose_op}"
                set_aside.append(Res(Truth.FALSE, evidence=[ev], why=[f"{why} {rule.dose_value:g}"]))
                continue
        if rule.route is not None and rule.route not in m.routes:
            if m.routes and "unrecognised" not in m.routes:  # given by another route
                set_aside.append(Res(Truth.FALSE, evidence=[ev], why=[f"{m.display}: not given {rule.route}"]))
                continue
            how = "route not recognised" if m.routes else "route not recorded"
            review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: {how}; given {rule.route}?"]))
            continue
        hit = _medication_hit(rule, m, ev, ongoing, since, ctx)
        (review if hit.truth == Truth.REVIEW else hits).append(hit)
    if hits:
        return Res(Truth.TRUE, max_until(hits)).merge(hits)
    if unknown:
        return Res(Truth.UNKNOWN).merge(unknown + review)
    if review:
        return Res(Truth.REVIEW).merge(review)
    return _nothing_found(rule, ctx, outside, set_aside)


def _nothing_found(rule: MedicationRule, ctx: Ctx, outside: bool, set_aside: list[Res]) -> Res:
    """No qualifying use on record: FALSE only when every source that could hold the drug was read. Uses on
    record that do not qualify (below the dose, another route) are named with their evidence: "no
    glucocorticoids within 1 week" would misstate a chart with prednisone 10 mg on it."""
    unread = unread_sources(rule.ingredients, ctx)
    if unread:  # "none (within the window) on record" needs every source that could hold the drug
        return Res(Truth.UNKNOWN, missing=[f"{rule.label}: {'; '.join(unread)}"])
    if set_aside:
        within = f" within {rule.within}" if rule.within else ""
        return Res(Truth.FALSE, why=[f"no {rule.label} on record qualifies{within}"]).merge(set_aside)
    if outside:
        return Res(
            Truth.FALSE,
            why=[f"no {rule.label} within {rule.within}" if rule.within else f"no qualifying {rule.label}"],
        )
    if ctx.absent == Truth.FALSE:
        return Res(Truth.FALSE, why=[f"no {rule.label} on record"])
    return Res(Truth.UNKNOWN, missing=[f"{rule.label}: none on record"])


def dose_missing(ctx: Ctx, m: MedicationFact) -> str:
    if m.ingredient in ctx.m.steroid_ingredients:
        return f"prednisone-equivalent daily dose of {m.display} ({m.resource})"
    return f"daily dose of {m.display} ({m.resource})"


def _medication_hit(
    rule: MedicationRule, m: MedicationFact, ev: Evidence, ongoing: bool, since: date | None, ctx: Ctx
) -> Res:
    if rule.match_review:
        return Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: {rule.match_review}"])
    if ongoing:
        if rule.if_ongoing == "review":
            note = (
                rule.ongoing_note.format(drug=m.display)
                if rule.ongoing_note
                else f"currently taking {m.display}; must stop {rule.within} before enrolment"
            )
            # stopping a current drug before enrolment is a step the study team plans, not a doubt
            return Res(Truth.REVIEW, evidence=[ev], notes=[note], standing=[note])
        return Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} ongoing"])
    last = min(m.end_bound or ctx.as_of, ctx.as_of) if m.end_unknown else min(m.last_use(), ctx.as_of)  # type: ignore[type-var]
    if since is None:
        return Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} on record"])
    until = rule.within.end_after(last) + timedelta(days=1)  # type: ignore[union-attr]
    note = (
        " (stop date not recorded: the latest possible date)"
        if m.end_unknown
        else ("" if m.end else " (end date not recorded: the earliest possible date)")
    )
    why = f"{m.display} last used {last.isoformat()}, within {rule.within}; clear from {until.isoformat()}{note}"
    return Res(Truth.TRUE, until=until, evidence=[ev], why=[why])


def evaluate_treated(rule: Treated, ctx: Ctx) -> Res:
    courses: dict[str, list[tuple[date, date]]] = {}
    evidence: dict[str, list[Evidence]] = {}
    undated = False
    for m in meds_of(rule.ingredients, ctx):
        if m.start is None:
            undated = True
            continue
        end = min(m.end or ctx.as_of, ctx.as_of) if (m.end or m.ongoing(ctx.as_of)) else m.start
        drug = ctx.m.medications.ingredients[m.ingredient].drug  # mofetil and mycophenolic acid: one drug
        courses.setdefault(drug, []).append((m.start, max(end, m.start)))
        evidence.setdefault(drug, []).append(med_evidence(m))
    need = (rule.min_duration.end_after(ctx.as_of) - ctx.as_of).days if rule.min_duration else 0
    strict = rule.min_duration is not None and rule.min_duration.strict
    enough = [d for d, spans in courses.items() if _longest_course(spans) > need - (0 if strict else 1)]
    if len(enough) >= rule.min_distinct:
        ev = [e for d in enough for e in evidence[d]]
        span = f" for {rule.min_duration} or longer" if rule.min_duration else ""
        return Res(Truth.TRUE, evidence=ev, why=[f"{len(enough)} of {rule.label}{span}"])
    ev = [e for es in evidence.values() for e in es]
    what = (f"{rule.min_distinct} different {rule.label}" if rule.min_distinct > 1 else rule.label) + (
        f" for at least {rule.min_duration}" if rule.min_duration else ""
    )
    unread = unread_sources(rule.ingredients, ctx)
    if ctx.absent == Truth.FALSE and not undated and not unread:
        return Res(Truth.FALSE, evidence=ev, why=[f"record shows {len(enough)} of {what}"])
    # Medication history is often incomplete (outside prescriptions): never a definite fail here.
    not_read = f" ({'; '.join(unread)})" if unread else ""
    return Res(
        Truth.UNKNOWN, evidence=ev, missing=[f"treatment history: record shows {len(enough)} of {what}{not_read}"]
    )


def _longest_course(spans: list[tuple[date, date]], gap_days: int = 100) -> int:
    """Days of the longest continuous course. Records of one drug less than `gap_days` apart (repeat
    prescriptions without a supply duration, a statement and its orders) are one course."""
    best = 0
    start: date | None = None
    end: date | None = None
    for s, e in sorted(spans):
        if start is None or end is None or (s - end).days > gap_days:
            start, end = s, e
        else:
            end = max(end, e)
        best = max(best, (end - start).days)
    return best


class _NamesDrugs(Protocol):
    @property
    def ingredients(self) -> frozenset[str]: ...  # read-only: the rules are frozen dataclasses


def medication_reads(rule: _NamesDrugs, _m: object) -> frozenset[str]:
    """The courses of its drugs (`meds_of`); the body weight only for a dose of one of them (dose_per_kg).
    For every rule kind that names drugs: `medication`, `treated`, and `current_dose` (doses.py)."""
    return frozenset(f"medication:{i}" for i in rule.ingredients)


register("medication", parse_medication, evaluate_medication, medication_reads)
register("treated", parse_treated, evaluate_treated, medication_reads)
