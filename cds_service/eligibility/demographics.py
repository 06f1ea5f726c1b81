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
    birth = ctx.facts.birth_date
    if birth is None:
        return Res(Truth.UNKNOWN, missing=["birth date (Patient.birthDate)"])
    age = age_on(birth, ctx.as_of)
    ev = [
        Evidence(
            resource=ctx.facts.patient,
            label="Age",
            value=age,
            unit="a",
            date=ctx.as_of,
            note=f"born {birth.isoformat()}",
        )
    ]
    if rule.min is not None and age < rule.min:
        turns = Window(int(rule.min), "year").end_after(birth)
        return Res(Truth.FALSE, until=turns, evidence=ev, why=[f"age {age} < {rule.min}"])
    if rule.max is not None and age > rule.max:
        return Res(Truth.FALSE, evidence=ev, why=[f"age {age} > {rule.max}"])
    until = Window(int(rule.max) + 1, "year").end_after(birth) if rule.max is not None else None
    return Res(Truth.TRUE, until=until, evidence=ev, why=[f"age {age}"])


def evaluate_sex(rule: Sex, ctx: Ctx) -> Res:
    g = ctx.facts.gender
    if g not in ("female", "male"):
        return Res(Truth.UNKNOWN, missing=["sex (Patient.gender)"])
    ev = [Evidence(resource=ctx.facts.patient, label="Sex", value=g)]
    return Res(Truth.TRUE if g == rule.sex else Truth.FALSE, evidence=ev)


register("age", parse_age, evaluate_age)
register("sex", parse_sex, evaluate_sex)
