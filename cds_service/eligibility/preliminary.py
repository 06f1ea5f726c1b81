"""Preliminary Observations (clinical audit 2, NS7).

A preliminary result is not silently dropped, and it never decides alone. Each observation rule is
evaluated twice: on final results only, and with preliminary results counted as if final. When both
readings agree, the final one stands; when a preliminary result newer than the final one would change
the outcome (a preliminary positive hCG yesterday after an older final negative), a person confirms it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds_service.eligibility.logic import Ctx, Res, Truth, dedupe_evidence
from cds_service.fhir.facts import LabResult
from cds_service.fhir.mappings import Mappings

Evaluator = Callable[[Any, Ctx, bool], Res]
Inputs = Callable[[Mappings, str], tuple[str, ...]]


def _no_inputs(_m: Mappings, _var: str) -> tuple[str, ...]:
    return ()


def _variables(rule: Any) -> tuple[str, ...]:
    return tuple(getattr(rule, "vars", ()) or (rule.var,))


def newest_preliminary(variables: tuple[str, ...], ctx: Ctx) -> LabResult | None:
    if ctx.facts.preliminary_labs.isdisjoint(variables):  # most records: no preliminary result to look at
        return None
    found = [
        r
        for var in variables
        for r in ctx.facts.labs.get(var, ())
        if r.preliminary and r.when is not None and r.when <= ctx.as_of
    ]
    return max(found, key=lambda r: r.when) if found else None  # type: ignore[arg-type,return-value]


def _shown(r: LabResult) -> str:
    if r.value is not None:
        return f"{r.value:g} {r.unit or ''}".strip()
    if r.positive is not None:
        return "positive" if r.positive else "negative"
    return r.answer or r.original_value or "no value"


def with_preliminaries(evaluate: Evaluator, inputs: Inputs = _no_inputs) -> Callable[[Any, Ctx], Res]:
    """Wrap an observation evaluator `evaluate(rule, ctx, preliminary_counts)`; `inputs` names the variables
    a derived one is calculated from (a preliminary creatinine changes an eGFR)."""

    def run(rule: Any, ctx: Ctx) -> Res:
        final = evaluate(rule, ctx, False)
        if not ctx.facts.preliminary_labs:  # most records: no preliminary result to weigh
            return final
        variables = tuple(x for var in _variables(rule) for x in (var, *inputs(ctx.m, var)))
        prelim = newest_preliminary(variables, ctx)
        if prelim is None:
            return final
        promoted = evaluate(rule, ctx, True)
        if promoted.truth == final.truth:
            return final
        label = ctx.m.variables[prelim.variable].label
        assert prelim.when is not None
        note = (
            f"{label}: a preliminary result of {prelim.when.isoformat()} ({_shown(prelim)}) is newer than the "
            "final results and would change this criterion; confirm the final result"
        )
        evidence = dedupe_evidence([*final.evidence, *promoted.evidence])
        return Res(Truth.REVIEW, evidence=evidence, notes=[note])

    return run
