"""Rule family: age and sex, from Patient.birthDate and Patient.gender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.eligibility.logic import Ctx, Res, Truth
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import Rule, RuleError, RuleParser, Window, check_keys, register
from cds_service.fhir.derive import age_on


@dataclass(frozen=True, slots=True)
class Age(Rule):
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Sex(Rule):
    sex: str


def parse_age(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"min", "max"}, "age")
    p.variables_used.add("age")
    return Age("age", arg.get("min"), arg.get("max"))


def parse_sex(p: RuleParser, arg: Any) -> Rule:
    if arg not in ("female", "male"):
        raise RuleError("sex is 'female' or 'male'")
    p.variables_used.add("sex")
    return Sex("sex", arg)


def evaluate_age(rule: Age, ctx: Ctx) -> Res:
    """Age in whole years on the evaluation date. A partial birthDate ("1960", "1960-12") is a range of
    ages: the rule decides only when the whole range is on one side of a bound, and a person confirms the
    date of birth when a bound falls inside it (never a definite fail or pass on an assumed 1 January)."""
    first = ctx.facts.birth_date
    if first is None:
        return Res(Truth.UNKNOWN, missing=["birth date (Patient.birthDate)"])
    last = ctx.facts.birth_latest or first
    oldest, youngest = age_on(first, ctx.as_of), age_on(last, ctx.as_of)
    age = str(oldest) if oldest == youngest else f"{youngest} or {oldest}"
    born = first.isoformat() if first == last else f"between {first.isoformat()} and {last.isoformat()}"
    ev = [
        Evidence(
            resource=ctx.facts.patient,
            label="Age",
            value=oldest if oldest == youngest else age,
            unit="a",
            date=ctx.as_of,
            note=f"born {born}",
        )
    ]
    if rule.min is not None and oldest < rule.min:
        turns = Window(int(rule.min), "year").end_after(last)
        return Res(Truth.FALSE, until=turns, evidence=ev, why=[f"age {age} < {rule.min:g}"])
    if rule.max is not None and youngest > rule.max:
        return Res(Truth.FALSE, evidence=ev, why=[f"age {age} > {rule.max:g}"])
    if (rule.min is not None and youngest < rule.min) or (rule.max is not None and oldest > rule.max):
        note = f"age {age} (born {born}); the full date of birth decides the age bound"
        return Res(Truth.REVIEW, evidence=ev, notes=[note])
    until = Window(int(rule.max) + 1, "year").end_after(first) if rule.max is not None else None
    return Res(Truth.TRUE, until=until, evidence=ev, why=[f"age {age}"])


def evaluate_sex(rule: Sex, ctx: Ctx) -> Res:
    g = ctx.facts.gender
    if g not in ("female", "male"):
        return Res(Truth.UNKNOWN, missing=["sex (Patient.gender)"])
    ev = [Evidence(resource=ctx.facts.patient, label="Sex", value=g)]
    return Res(Truth.TRUE if g == rule.sex else Truth.FALSE, evidence=ev)


register("age", parse_age, evaluate_age)
register("sex", parse_sex, evaluate_sex)
