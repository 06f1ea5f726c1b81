"""Rule family: procedures on record (procedure): plasmapheresis, major surgery, transplant, cell therapy,
transfusion, from mappings/procedures.yaml. "None on record" needs Procedure to have been read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.eligibility.logic import Ctx, Res, Truth, max_until
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import Rule, RuleParser, Window, check_keys, register


@dataclass(frozen=True, slots=True)
class ProcedureRule(Rule):
    groups: frozenset[str]
    within: Window | None
    match_review: str | None


def parse_procedure(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"groups", "within", "match_review"}, "procedure")
    groups = p.procedure_groups(arg["groups"])
    return ProcedureRule("procedure", groups, Window.lookback(arg.get("within")), arg.get("match_review"))


def evaluate_procedure(rule: ProcedureRule, ctx: Ctx) -> Res:
    labels = ctx.m.group_labels(rule.groups, procedures=True)
    hits: list[Res] = []
    review: list[Res] = []
    outside = False
    since = ctx.since(rule.within) if rule.within else None
    for p in ctx.facts.procedures:
        if not (p.groups & rule.groups):
            continue
        ev = Evidence(resource=p.resource, label=p.display, date=p.when, note=p.status)
        if since is not None and p.when is None:
            review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{p.display}: date not recorded"]))
        elif since is not None and p.when < since:  # type: ignore[operator]
            outside = True
        elif rule.match_review:
            review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{p.display}: {rule.match_review}"]))
        else:
            until = rule.within.end_after(p.when) if rule.within and p.when else None
            hits.append(Res(Truth.TRUE, until=until, evidence=[ev], why=[f"{p.display} on record"]))
    if hits:
        return Res(Truth.TRUE, max_until(hits)).merge(hits)
    if review:
        return Res(Truth.REVIEW).merge(review)
    if "Procedure" not in ctx.facts.gathered:
        return Res(Truth.UNKNOWN, missing=[f"procedures (Procedure) not read, so {labels} cannot be ruled out"])
    if outside or ctx.absent == Truth.FALSE:
        return Res(Truth.FALSE, why=[f"no {labels} {'within ' + str(rule.within) if rule.within else 'on record'}"])
    return Res(Truth.UNKNOWN, missing=[f"{labels}: none on record"])


def procedure_reads(rule: ProcedureRule, _m: object) -> frozenset[str]:
    return frozenset(f"procedure:{g}" for g in rule.groups)


register("procedure", parse_procedure, evaluate_procedure, procedure_reads)
