"""Rule family: observations. Thresholds in canonical units and x ULN/LLN (lab), qualitative results
(positive), BILAG grades (grade_count) and coded answers (answer).

Every reading is the newest one inside the variable's recency window; a value missing, too old or in a
unit that cannot be converted is UNKNOWN with the reason, never a fail. Positive findings outlast
negatives: a positive older than its window is kept (pregnancy) or goes to a person, never "absent".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cds_service.eligibility.lab_flags import flag_decides
from cds_service.eligibility.logic import CMP, Ctx, Res, Truth
from cds_service.eligibility.preliminary import with_preliminaries
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import OPS, Rule, RuleError, RuleParser, Window, as_list, check_keys, register
from cds_service.eligibility.sledai import INPUTS as SLEDAI_INPUTS
from cds_service.eligibility.sledai import PARTS as SLEDAI_PARTS
from cds_service.eligibility.sledai import sledai_part
from cds_service.fhir.derive import derived_result
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


def has_value(r: LabResult) -> bool:
    return r.value is not None


def has_positive(r: LabResult) -> bool:
    return r.positive is not None


def has_answer(r: LabResult) -> bool:
    return r.answer is not None


def current(
    var: str, within: Window | None, ctx: Ctx, usable: Callable[[LabResult], bool], prelim: bool = False
) -> tuple[LabResult | None, str | None]:
    """Newest result of `var` dated within the recency window that `usable` (one of the tests above)
    accepts; preliminary results count only when `prelim` (see preliminary.py). Asked once per patient
    and date (logic.Memo): the answer depends on nothing else.

    Returns (result, None) or (None, why-missing)."""
    key = (var, within, usable, prelim)
    found = ctx.memo.current.get(key)
    if found is None:
        found = ctx.memo.current[key] = _current(var, within, ctx, usable, prelim)
    return found


def _current(
    var: str, within: Window | None, ctx: Ctx, usable: Callable[[LabResult], bool], prelim: bool
) -> tuple[LabResult | None, str | None]:
    v = ctx.m.variables[var]
    window = within or Window(v.current_days, "day")
    since = ctx.since(window)
    seen_problem = None
    older: LabResult | None = None
    for r in ctx.facts.labs.get(var, ()):
        if r.when is None or r.when > ctx.as_of or (r.preliminary and not prelim):
            continue
        if r.when < since:
            older = older or r
            continue
        if usable(r):
            return r, None
        seen_problem = seen_problem or r.problem or _unreadable(r)
    if v.derived in SLEDAI_PARTS:
        d, missing_inputs = sledai_part(ctx, var, v.derived, since, prelim)
        if d is not None:
            return d, None
        if not seen_problem:
            return None, f"{v.label}: not recorded, and cannot be calculated: missing {', '.join(missing_inputs)}"
    elif v.derived:
        weight_since = ctx.since(Window(ctx.m.variables["weight"].current_days, "day"))
        d, missing_inputs = derived_result(ctx.facts, var, v.derived, since, ctx.as_of, weight_since, prelim)
        if d is not None:
            return d, None
        if missing_inputs:
            derived_note = f"not reported, and cannot be calculated: missing {', '.join(missing_inputs)}"
            return None, f"{v.label} ({v.derived.replace('_', '-')}): {derived_note}"
    code = v.primary
    if seen_problem:
        return (
            None,
            f"{v.label} (LOINC {code.code}): {seen_problem}"
            if "loinc" in code.system
            else f"{v.label}: {seen_problem}",
        )
    where = f"LOINC {code.code}" if "loinc" in code.system else f"{code.system}|{code.code}"
    if older is not None and older.when is not None:
        return None, f"{v.label} ({where}): last result {older.when.isoformat()} is older than {window}"
    return None, f"{v.label} ({where}): no result in the last {window}"


def _unreadable(r: LabResult) -> str:
    """A result in the window that says nothing this criterion can use (audit 2, NW3): present, not absent."""
    assert r.when is not None
    quoted = f" ('{r.original_value[:60]}')" if r.original_value else ""
    return f"result of {r.when.isoformat()} present but unreadable{quoted}"


def evidence(ctx: Ctx, r: LabResult, note: str | None = None) -> Evidence:
    label = ctx.m.variables[r.variable].label
    extra = []
    if r.derived_from:
        extra.append("calculated from " + ", ".join(r.derived_from))
    if note:
        extra.append(note)
    value: float | str | None = r.value
    if value is None:
        value = r.answer or (
            {True: "positive", False: "negative"}.get(r.positive) if r.positive is not None else r.original_value
        )
    return Evidence(
        resource=r.resource,
        label=label,
        value=value,
        unit=r.unit if r.value is not None else None,
        original_value=r.original_value,
        original_unit=r.original_unit,
        date=r.when,
        note="; ".join(extra) or None,
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


def older_positive(var_key: str, ctx: Ctx, prelim: bool = False) -> Res | None:
    """Positive findings outlast negatives: a positive older than the recency window, with no later
    negative, is never read as "absent". It counts for `positive_persists_days` (a pregnancy test:
    about ten months), and otherwise goes to a person."""
    var = ctx.m.variables[var_key]
    newest = next(
        (
            x
            for x in ctx.facts.labs.get(var_key, ())
            if x.positive is not None and x.when and x.when <= ctx.as_of and (prelim or not x.preliminary)
        ),
        None,
    )
    if newest is None or not newest.positive:
        return None
    assert newest.when is not None
    ev = [evidence(ctx, newest)]
    if var.positive_lifelong:
        why = f"{var.label} positive on {newest.when.isoformat()} (stays positive for life), no later negative"
        return Res(Truth.TRUE, evidence=ev, why=[why])
    if var.positive_persists_days:
        until = newest.when + timedelta(days=var.positive_persists_days)
        if until > ctx.as_of:
            # a pregnancy is not a washout: no date lifts it, a new negative test does (so no card until then)
            why = f"{var.label} positive on {newest.when.isoformat()}, no later negative on record"
            return Res(Truth.TRUE, evidence=ev, why=[why])
        return None
    note = f"{var.label} positive on {newest.when.isoformat()}, older than the screening window: still positive?"
    return Res(Truth.REVIEW, evidence=ev, notes=[note])


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


# every observation rule: a preliminary result newer than the final ones goes to a person (audit 2, NS7)
register("lab", parse_lab, with_preliminaries(evaluate_lab, _inputs))
register("positive", parse_positive, with_preliminaries(evaluate_positive))
register("grade_count", parse_grade_count, with_preliminaries(evaluate_grade_count))
register("answer", parse_answer, with_preliminaries(evaluate_answer))
