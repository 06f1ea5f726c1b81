"""Rule family: diagnoses on the problem list (condition).

Events ("MI within 12 months", `dated_by: diagnosis`) count from their onset whatever their clinical
status (the recordedDate bounds an onset not recorded); "present within" counts an active condition as
present, and one with no status as present since its onset. History codes are never recent, and a
condition that cannot be dated goes to a person. "None on record" needs the problem list to have been read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.eligibility.logic import Ctx, Res, Truth, max_until, min_until
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import Rule, RuleError, RuleParser, Window, check_keys, register
from cds_service.fhir.facts import ConditionFact
from cds_service.fhir.mappings import Mappings

# Condition.category codes (or texts, folded: normalize._categories) that record a diagnosis: FHIR / US Core
# condition-category, and SNOMED CT 439401001 "Diagnosis" (observable entity), which C-CDA-derived records send
DIAGNOSIS_CATEGORIES = frozenset({"problem-list-item", "problem-list", "encounter-diagnosis", "diagnosis", "439401001"})
# a past medical history: for a disease that does not resolve (SLE) still the patient's own diagnosis, and read
# as none it left a real SLE patient outside every trial
HISTORY_CATEGORIES = frozenset({"medical-history", "past-medical-history"})
# categories that record no diagnosis made: concerns of the patient or others beyond the problem list (US Core)
NOT_A_DIAGNOSIS = frozenset({"health-concern"})


def is_lifelong(groups: Iterable[str], m: Mappings) -> bool:
    """Whether one of `groups` is a disease that does not resolve (SLE): its history still counts."""
    return any(m.conditions.groups[g].lifelong for g in groups)


def category_reading(c: ConditionFact, lifelong: bool) -> str:
    """What the Condition's categories make of it: "diagnosis", "not" (a category that records no diagnosis)
    or "unknown" (only categories this service does not know: a site's own, a reason for visit)."""
    cats = c.categories
    if not cats or cats & DIAGNOSIS_CATEGORIES or (lifelong and cats & HISTORY_CATEGORIES):
        return "diagnosis"
    return "not" if cats & (NOT_A_DIAGNOSIS | HISTORY_CATEGORIES) else "unknown"


@dataclass(frozen=True, slots=True)
class ConditionRule(Rule):
    groups: frozenset[str]
    within: Window | None
    except_groups: frozenset[str]
    except_review: str | None
    active_only: bool  # only a current (active) diagnosis counts, e.g. pregnancy
    match_review: str | None  # a match needs a person (severity, scope), never a definite TRUE
    onset_before: Window | None  # diagnosed at least this long ago
    by_diagnosis: bool  # `within` counts from the diagnosis date, not from the last day the condition was present


def parse_condition(p: RuleParser, arg: Any) -> Rule:
    check_keys(
        arg,
        {"groups", "within", "dated_by", "except", "except_review", "active_only", "match_review", "onset_before"},
        "condition",
    )
    if arg.get("dated_by", "presence") not in ("presence", "diagnosis"):
        raise RuleError("condition.dated_by is 'presence' (default: present within the window) or 'diagnosis'")
    exc = p.condition_groups(arg["except"]) if "except" in arg else frozenset()
    if exc and not arg.get("except_review"):
        raise RuleError("condition: 'except' needs 'except_review' saying what a person must confirm")
    return ConditionRule(
        "condition",
        p.condition_groups(arg["groups"]),
        Window.lookback(arg.get("within")),
        exc,
        arg.get("except_review"),
        bool(arg.get("active_only", False)),
        arg.get("match_review"),
        Window.parse(arg.get("onset_before")),
        arg.get("dated_by") == "diagnosis",
    )


def evaluate_condition(rule: ConditionRule, ctx: Ctx) -> Res:
    found = _ConditionFindings()
    for c in ctx.facts.conditions:
        if c.groups & rule.groups:
            _one_condition(rule, c, ctx, found)
    if found.definite:
        return Res(Truth.TRUE, max_until(found.definite)).merge(found.definite)
    if found.review:
        return Res(Truth.REVIEW).merge(found.review)
    if found.too_recent:
        return Res(Truth.FALSE, min_until(found.too_recent)).merge(found.too_recent)
    # From here on the answer rests on what is NOT on record: the problem list must have been read.
    labels = ctx.m.group_labels(rule.groups)
    if "Condition" not in ctx.facts.gathered:
        return Res(Truth.UNKNOWN, missing=[f"problem list (Condition) not read, so {labels} cannot be ruled out"])
    unread = ctx.facts.unread.get("Condition", 0)
    if unread:  # a text-only or locally coded entry might be one of these
        what = "condition" if unread == 1 else "conditions"
        why = f"{unread} {what} could not be read (not valid FHIR, or in words or codes this service does not know)"
        return Res(Truth.UNKNOWN, missing=[f"{why}, so {labels} cannot be ruled out"])
    if found.out_of_window:
        return Res(
            Truth.FALSE, why=[f"{labels}: none within {rule.within}" if rule.within else f"{labels}: not current"]
        )
    if ctx.absent == Truth.FALSE:
        return Res(Truth.FALSE, why=[f"no {labels} on record"])
    return Res(Truth.UNKNOWN, missing=[f"{labels}: no diagnosis on record"])


def _one_condition(rule: ConditionRule, c: ConditionFact, ctx: Ctx, found: _ConditionFindings) -> None:
    ev = Evidence(
        resource=c.resource,
        label=c.display,
        date=c.onset or c.recorded,
        note=condition_note(c.active, c.confirmed, c.abatement, c.history),
    )

    def review(note: str) -> None:
        found.review.append(Res(Truth.REVIEW, evidence=[ev], notes=[note]))

    if rule.active_only and (c.history or c.active is not True):
        if c.history or c.active is None:
            review(f"{c.display}: {'a history code' if c.history else 'status not recorded'}; is it current?")
        else:
            found.out_of_window = True
        return
    stale = _stale(c, rule, ctx)
    if stale:
        review(stale)
        return
    if rule.onset_before is not None:
        early = _diagnosed_early_enough(rule.onset_before, c, ctx, ev)
        if isinstance(early, str):
            review(early)
            return
        if early is not None:
            found.too_recent.append(early)
            return
    until: date | None = None
    if rule.within is not None:
        dated = _condition_in_window(rule, c, ctx)
        if dated is None:
            found.out_of_window = True
            return
        if isinstance(dated, str):
            review(dated)
            return
        until = dated if dated != date.max else None
    if c.groups & rule.except_groups:
        review(f"{c.display}: {rule.except_review}")
    elif category_reading(c, is_lifelong(c.groups & rule.groups, ctx.m)) != "diagnosis":  # a health concern
        review(f"{c.display} is recorded as a health concern or under a category that may not be a diagnosis")
    elif rule.match_review:
        review(f"{c.display}: {rule.match_review}")
    elif not c.confirmed:
        review(f"{c.display} is recorded as unconfirmed")
    else:
        found.definite.append(Res(Truth.TRUE, until=until, evidence=[ev], why=[f"{c.display} on record"]))


def _diagnosed_early_enough(window: Window, c: ConditionFact, ctx: Ctx, ev: Evidence) -> Res | str | None:
    """For `onset_before`: None when diagnosed long enough ago; a temporary FALSE when too recently; a review
    note when the record cannot say. The recordedDate is an upper bound of the onset: entered 3 years ago, it
    was diagnosed 3 years ago or earlier (though a recent entry may be a migration, so it never shows "too
    recent")."""
    since = ctx.since(window)
    if c.onset is None:
        if c.recorded is not None and (c.recorded < since or (c.recorded == since and not window.strict)):
            return None
        return f"{c.display}: date of diagnosis not recorded; diagnosed {window} ago or more?"
    if c.onset > since or (window.strict and c.onset == since):
        why = f"{c.display} diagnosed {c.onset.isoformat()}, less than {window} ago"
        return Res(Truth.FALSE, until=window.end_after(c.onset), evidence=[ev], why=[why])
    return None


def _condition_in_window(rule: ConditionRule, c: ConditionFact, ctx: Ctx) -> date | str | None:
    """Inside `rule.within`: the date it stops counting (date.max: still present); a review note; or
    None when outside. Events ("MI within 12 months") are dated by onset whatever their clinical status;
    presence ("active within") by the status, then abatement. History codes are never recent."""
    window = rule.within
    assert window is not None
    since = ctx.since(window)
    if c.history:  # the onset, else the date it was entered (an upper bound of the onset) dates it
        ref = c.onset or c.recorded
        if ref is None:
            return f"{c.display}: a history code with no date; was the event within {window}?"
        if ref >= since:
            return f"{c.display}: a history code dated {ref.isoformat()}; was the event within {window}?"
        return None
    if rule.by_diagnosis:
        ref = c.onset
        if ref is None and c.recorded is not None and c.recorded < since:
            return None  # entered before the window, so it happened before it (the recordedDate bounds the onset)
        acute = any(ctx.m.conditions.groups[g].acute_event for g in c.groups & rule.groups)
        if ref is not None and ref < since and c.active is True and not acute:
            return f"{c.display}: diagnosed {ref.isoformat()}, before the last {window}, and still recorded active"
    elif c.active is True:
        return date.max  # present now, so present within the window
    elif c.active is None and c.abatement is None:
        # no status and no end: present since its onset, perhaps still; only an onset inside the window decides
        if c.onset is not None and c.onset >= since:
            return window.end_after(c.onset)
        dated = f"since {c.onset.isoformat()}" if c.onset else "date not recorded"
        return f"{c.display}: status not recorded ({dated}); present within {window}?"
    else:
        ref = c.abatement or c.onset
    if ref is None:
        what = "date of onset" if rule.by_diagnosis else "date"
        recorded = f" (only entered on {c.recorded.isoformat()})" if c.recorded else ""
        return f"{c.display}: {what} not recorded{recorded}; was it within {window}?"
    if ref < since:
        return None
    return window.end_after(ref)


def _stale(c: ConditionFact, rule: ConditionRule, ctx: Ctx) -> str | None:
    """An entry of a state that cannot last (pregnancy) still recorded active from longer ago than it can
    last: a person checks it is current, rather than a code left on the problem list deciding for good."""
    if c.active is not True:
        return None
    lasts = [g.lasts_days for k in c.groups & rule.groups if (g := ctx.m.conditions.groups[k]).lasts_days]
    since = c.onset or c.recorded
    if not lasts or since is None or (ctx.as_of - since).days <= max(lasts):
        return None
    return f"{c.display}: still recorded active from {since.isoformat()}; is it current?"


@dataclass(slots=True)
class _ConditionFindings:
    definite: list[Res] = field(default_factory=list)
    review: list[Res] = field(default_factory=list)
    too_recent: list[Res] = field(default_factory=list)
    out_of_window: bool = False


def condition_note(active: bool | None, confirmed: bool, abatement: date | None, history: bool = False) -> str:
    """How a Condition stands on the record, for its evidence line (criteria and cohort entry alike)."""
    parts = [{True: "active", False: "inactive", None: "status not recorded"}[active]]
    if history:
        parts.append("history code")
    if abatement:
        parts.append(f"abated {abatement.isoformat()}")
    if not confirmed:
        parts.append("unconfirmed")
    return ", ".join(parts)


def condition_reads(rule: ConditionRule, _m: Mappings) -> frozenset[str]:
    """Only the Conditions in one of its groups: the `except` groups are read of those alone."""
    return frozenset(f"condition:{g}" for g in rule.groups)


register("condition", parse_condition, evaluate_condition, condition_reads)
