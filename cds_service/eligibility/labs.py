"""Rule family: observations. Thresholds in canonical units and x ULN/LLN (lab), qualitative results
(positive), BILAG grades (grade_count) and coded answers (answer).

Every reading is the newest one inside the variable's recency window; a value missing, too old or in a
unit that cannot be converted is UNKNOWN with the reason, never a fail. Positive findings outlast
negatives: a positive older than its window is kept (pregnancy) or goes to a person, never "absent".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.eligibility.lab_flags import flag_decides
from cds_service.eligibility.lab_results import current, evidence, has_answer, has_positive, has_value, older_positive
from cds_service.eligibility.logic import CMP, Ctx, Res, Truth
from cds_service.eligibility.preliminary import with_preliminaries
from cds_service.eligibility.rules import OPS, Rule, RuleError, RuleParser, Window, as_list, check_keys, register
from cds_service.eligibility.sledai import INPUTS as SLEDAI_INPUTS
from cds_service.eligibility.sledai import PARTS as SLEDAI_PARTS
from cds_service.fhir.facts import LabResult
from cds_service.fhir.mappings import Mappings

_DERIVED_INPUTS = {
    "cockcroft_gault": ("creatinine", "weight", "age", "sex"),
    "ckd_epi_2021": ("creatinine", "age", "sex"),
    **{part: SLEDAI_INPUTS for part in SLEDAI_PARTS},
}


@dataclass(frozen=True, slots=True)
class Lab(Rule):
    var: str
    op: str
    value: float | None  # canonical unit
    uln: float | None  # multiple of the upper limit of normal
    lln: float | None  # multiple of the lower limit of normal
    within: Window | None
    text: str  # threshold as written, for explanations


@dataclass(frozen=True, slots=True)
class Positive(Rule):
    var: str
    within: Window | None
    missing_is_absent: bool  # a screening test whose absence reads like an absent diagnosis


@dataclass(frozen=True, slots=True)
class GradeCount(Rule):
    vars: tuple[str, ...]
    grades: frozenset[str]
    min: int
    within: Window | None


@dataclass(frozen=True, slots=True)
class Answer(Rule):
    var: str
    values: frozenset[str]
    within: Window | None


def parse_lab(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"var", "op", "value", "unit", "uln", "lln", "within"}, "lab")
    var = p.mappings.variables[p.var(arg["var"])]
    op = arg.get("op")
    if op not in OPS:
        raise RuleError(f"lab {var.key}: op must be one of {sorted(OPS)}")
    if var.derived:
        p.variables_used.update(_DERIVED_INPUTS[var.derived])
    for limit in ("uln", "lln"):
        if limit in arg:
            if "value" in arg or len({"uln", "lln"} & set(arg)) > 1:
                raise RuleError(f"lab {var.key}: give one of value+unit, uln or lln")
            mult = float(arg[limit])
            return Lab(
                "lab",
                var.key,
                op,
                None,
                mult if limit == "uln" else None,
                mult if limit == "lln" else None,
                Window.lookback(arg.get("within")),
                f"{op} {arg[limit]} x {limit.upper()}",
            )
    if "value" not in arg or "unit" not in arg:
        raise RuleError(f"lab {var.key}: a threshold needs value and unit")
    factor = var.factor(arg["unit"])
    if factor is None:
        raise RuleError(f"lab {var.key}: unit {arg['unit']!r} is not convertible to {var.unit}")
    return Lab(
        "lab",
        var.key,
        op,
        float(arg["value"]) * factor,
        None,
        None,
        Window.lookback(arg.get("within")),
        f"{op} {arg['value']} {arg['unit']}",
    )


def parse_positive(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"var", "within", "if_missing"}, "positive")
    if arg.get("if_missing", "unknown") not in ("unknown", "absent"):
        raise RuleError("positive.if_missing is 'unknown' (default) or 'absent'")
    return Positive(
        "positive", p.var(arg["var"]), Window.lookback(arg.get("within")), arg.get("if_missing") == "absent"
    )


def parse_grade_count(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"vars", "grades", "min", "within"}, "grade_count")
    names: list[str] = []
    for pattern in as_list(arg["vars"], "grade_count.vars"):
        if pattern.endswith("*"):
            hits = sorted(k for k in p.mappings.variables if k.startswith(pattern[:-1]))
            if not hits:
                raise RuleError(f"grade_count: {pattern!r} matches no variable")
            names.extend(hits)
        else:
            names.append(pattern)
    return GradeCount(
        "grade_count",
        tuple(p.var(n) for n in names),
        frozenset(str(g) for g in as_list(arg["grades"], "grades")),
        int(arg.get("min", 1)),
        Window.lookback(arg.get("within")),
    )


def parse_answer(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"var", "in", "within"}, "answer")
    return Answer(
        "answer",
        p.var(arg["var"]),
        frozenset(str(v) for v in as_list(arg["in"], "in")),
        Window.lookback(arg.get("within")),
    )


_CENSORED = ("<", "<=", ">", ">=")


def _censored_decides(op: str, comparator: str, value: float, threshold: float) -> bool | None:
    """What a censored result ("<5", ">100") says of `op threshold`, or None when its bound cannot say.

    "<X" means the true value is below X, so it decides only when X is at or under the threshold;
    ">X" mirrors that. Equality and anything else stays undecided.
    """
    if comparator in ("<", "<=") and value <= threshold:
        below = True
    elif comparator in (">", ">=") and value >= threshold:
        below = False
    else:
        return None
    if op in ("<=", "<"):
        return below
    if op in (">=", ">"):
        return not below
    return None


def evaluate_lab(rule: Lab, ctx: Ctx, prelim: bool = False) -> Res:
    r, why = current(rule.var, rule.within, ctx, has_value, prelim)
    if r is None:
        return Res(Truth.UNKNOWN, missing=[why or rule.var])
    assert r.value is not None
    label = ctx.m.variables[rule.var].label
    note = None
    if rule.uln is not None or rule.lln is not None:
        limit, source, mult, name = (
            (r.uln, r.uln_source, rule.uln, "upper")
            if rule.uln is not None
            else (r.lln, r.lln_source, rule.lln, "lower")
        )
        flagged = flag_decides(rule.op, mult, name, r.flag) if source != "reference range" else None
        if flagged is not None:  # the lab's own H/L/N flag outranks a documented default (audit 2, NS12)
            return Res(
                Truth.TRUE if flagged else Truth.FALSE,
                evidence=[evidence(ctx, r, f"flagged {r.flag} by the laboratory against its reference range")],
                why=[f"{label} flagged {r.flag} by the laboratory: {'meets' if flagged else 'fails'} {rule.text}"],
            )
        if limit is None or not limit:
            return Res(Truth.UNKNOWN, missing=[f"{label}: {name} limit of normal (no reference range, no default)"])
        threshold = mult * limit  # type: ignore[operator]
        abbr = f"{name[0].upper()}LN"
        note = f"{abbr} {limit:g} {r.unit} ({source}); value is {r.value / limit:.2f} x {abbr}"
    else:
        threshold = rule.value  # type: ignore[assignment]
    if r.comparator in _CENSORED:
        ok = _censored_decides(rule.op, r.comparator, r.value, threshold)
        if ok is None:
            return Res(
                Truth.UNKNOWN,
                evidence=[evidence(ctx, r, note)],
                missing=[f"{label}: result '{r.comparator[0]}{r.original_value}' cannot be compared with {rule.text}"],
            )
    else:
        ok = CMP[rule.op](r.value, threshold)
    return Res(
        Truth.TRUE if ok else Truth.FALSE,
        evidence=[evidence(ctx, r, note)],
        why=[f"{label} {r.value:g} {r.unit} {'meets' if ok else 'does not meet'} {rule.text}"],
    )


def evaluate_positive(rule: Positive, ctx: Ctx, prelim: bool = False) -> Res:
    r, why = current(rule.var, rule.within, ctx, has_positive, prelim)
    label = ctx.m.variables[rule.var].label
    if r is not None:
        return Res(
            Truth.TRUE if r.positive else Truth.FALSE,
            evidence=[evidence(ctx, r)],
            why=[f"{label} {'positive' if r.positive else 'negative'}"],
        )
    older = older_positive(rule.var, ctx, prelim)
    if older is not None:
        return older
    if rule.missing_is_absent and ctx.absent == Truth.FALSE and "Observation" in ctx.facts.gathered:
        return Res(Truth.FALSE, why=[f"no positive {label} on record"])
    return Res(Truth.UNKNOWN, missing=[why or rule.var])


def evaluate_grade_count(rule: GradeCount, ctx: Ctx, prelim: bool = False) -> Res:
    hits: list[LabResult] = []
    missing: list[str] = []
    for var in rule.vars:
        r, why = current(var, rule.within, ctx, has_answer, prelim)
        if r is None:
            missing.append(why or var)
        elif r.answer in rule.grades:
            hits.append(r)
    grades = "/".join(sorted(rule.grades))
    ev = [evidence(ctx, r) for r in hits]
    if len(hits) >= rule.min:
        return Res(Truth.TRUE, evidence=ev, why=[f"{len(hits)} domain(s) graded {grades}"])
    if len(hits) + len(missing) >= rule.min and missing:
        if len(missing) == len(rule.vars):
            missing = [f"BILAG-2004 organ domain grades (none recorded in the last {rule.within or '60 days'})"]
        return Res(Truth.UNKNOWN, evidence=ev, missing=missing)
    return Res(Truth.FALSE, evidence=ev, why=[f"{len(hits)} domain(s) graded {grades}, need {rule.min}"])


def evaluate_answer(rule: Answer, ctx: Ctx, prelim: bool = False) -> Res:
    r, why = current(rule.var, rule.within, ctx, has_answer, prelim)
    if r is None:
        return Res(Truth.UNKNOWN, missing=[why or rule.var])
    ok = r.answer in rule.values
    label = ctx.m.variables[rule.var].label
    return Res(Truth.TRUE if ok else Truth.FALSE, evidence=[evidence(ctx, r)], why=[f"{label} {r.answer}"])


def _inputs(m: Mappings, var: str) -> tuple[str, ...]:
    """The recorded variables a derived one is calculated from (creatinine for eGFR)."""
    derived = m.variables[var].derived
    return tuple(x for x in _DERIVED_INPUTS.get(derived, ()) if x in m.variables) if derived else ()


def lab_reads(rule: Lab | Positive | GradeCount | Answer, m: Mappings) -> frozenset[str] | None:
    """The results of its variables (and their preliminary ones); None for a calculated variable, whose
    inputs include the age and the sex (eGFR, SLEDAI parts)."""
    variables = rule.vars if isinstance(rule, GradeCount) else (rule.var,)
    if any(m.variables[v].derived for v in variables):
        return None
    return frozenset(f"lab:{v}" for v in variables)


# every observation rule: a preliminary result newer than the final ones goes to a person (audit 2, NS7)
register("lab", parse_lab, with_preliminaries(evaluate_lab, _inputs), lab_reads)
register("positive", parse_positive, with_preliminaries(evaluate_positive), lab_reads)
register("grade_count", parse_grade_count, with_preliminaries(evaluate_grade_count), lab_reads)
register("answer", parse_answer, with_preliminaries(evaluate_answer), lab_reads)
