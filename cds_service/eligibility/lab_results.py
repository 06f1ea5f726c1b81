"""Which result of a variable a criterion reads: the newest one inside the recency window that the test
at hand can use (a value, a positive or negative reading, an answer), else why there is none; calculated
ones (eGFR, SLEDAI parts) when nothing was reported; and a positive older than its window, which outlasts
the negatives (`older_positive`). Shared by the observation rules (labs.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cds_service.eligibility.logic import Ctx, Res, Truth
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import Window
from cds_service.eligibility.sledai import PARTS as SLEDAI_PARTS
from cds_service.eligibility.sledai import sledai_part
from cds_service.fhir.derive import derived_result
from cds_service.fhir.facts import LabResult


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
