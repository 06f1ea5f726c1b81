"""Evaluate every criterion of a trial against one patient's facts.

Four outcomes per criterion: `pass` (does not stand in the way), `fail`
(definitely does), `unknown` (data missing to decide), `review` (a person must
decide). Rules combine in Kleene logic over TRUE / FALSE / UNKNOWN / REVIEW.

Two safety rules shape every leaf:
- A missing lab is UNKNOWN, never a fail.
- Absence of a diagnosis or a medication from the record ("none on record")
  may only ever *help* the patient: it reads as FALSE where FALSE cannot fail the
  criterion (an exclusion), and as UNKNOWN where it would (an inclusion). So an
  incomplete problem list can never hide a trial.

Temporary bars: a result carries `until`, the date its truth value is expected
to flip (a washout ending, a birthday). A criterion that fails only until a date
is a temporary fail; a trial whose fails are all temporary is possibly-eligible
from the latest of those dates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from cds_service.eligibility.cohort import entry
from cds_service.eligibility.logic import Ctx, Memo, Res, Truth, all_of, any_of, dedupe_evidence
from cds_service.eligibility.report import CriterionResult, TrialResult
from cds_service.eligibility.rules import (
    LEAVES,
    All,
    AnyAvailable,
    AnyOf,
    Implies,
    NoneOnRecord,
    Not,
    ReviewLeaf,
    Rule,
)
from cds_service.eligibility.trials import Criterion, Trial
from cds_service.fhir.facts import PatientFacts
from cds_service.fhir.mappings import Mappings


class Engine:
    """Holds the mappings; evaluates trials for patients. Each rule kind's evaluation lives in its family
    module (demographics, labs, conditions, medications, procedures); this class only combines them."""

    def __init__(self, mappings: Mappings, horizon_days: int = 365) -> None:
        self.m = mappings
        self.horizon = timedelta(days=horizon_days)
        self._combinators: dict[type, Callable[[Any, Ctx], Res]] = {
            All: self._all, AnyOf: self._any, AnyAvailable: self._any_available, ReviewLeaf: self._review,
            Not: self._not, NoneOnRecord: self._none_on_record, Implies: self._implies,
        }  # fmt: skip

    def evaluate(self, patient: PatientFacts, trial: Trial, as_of: date, memo: Memo | None = None) -> TrialResult:
        """`memo`: shared by the trials evaluated for this patient on this date (Catalog.report)."""
        cohort = entry(trial, patient, self.m)
        if cohort.outcome != "in":  # outside the population the trial studies: no criterion is read
            status = "ineligible" if cohort.outcome == "out" else "not-assessed"
            return TrialResult(id=trial.id, title=trial.title, status=status, url=trial.url, cohort=cohort, criteria=[])
        if memo is None or memo.facts is not patient or memo.as_of != as_of:
            memo = Memo(patient, as_of)
        contexts = {e: Ctx(patient, as_of, self.m, e, False, memo) for e in (False, True)}  # by exclusion
        results = [self.criterion(patient, c, as_of, rule, contexts[c.type == "exclusion"]) for c, rule in trial.plan]
        horizon = as_of + self.horizon
        for r in results:
            if r.outcome == "fail" and r.until is not None and r.until > horizon:
                # A bar that lifts beyond the horizon is a fail today, not "possibly eligible from 2032".
                beyond = f"eligible again only from {r.until.isoformat()}, beyond {self.horizon.days} days"
                r.explanation = f"{r.explanation}; {beyond}" if r.explanation else beyond
        notes = list(trial.notes)
        if patient.deceased:
            died = f" ({patient.deceased_date.isoformat()})" if patient.deceased_date else ""
            notes.insert(0, f"the patient is recorded as deceased{died}")
        permanent_fail = patient.deceased or any(
            r.outcome == "fail" and (r.until is None or r.until > horizon) for r in results
        )
        temporary = [r.until for r in results if r.outcome == "fail" and r.until is not None]
        eligible_from = None
        if permanent_fail:
            status = "ineligible"
        elif temporary:
            status, eligible_from = "possibly-eligible", max(temporary)
        elif any(r.outcome == "unknown" or r.flagged for r in results):
            status = "possibly-eligible"  # data missing, or the record points towards an exclusion
        else:
            status = "likely-eligible"
        return TrialResult(
            id=trial.id,
            title=trial.title,
            status=status,
            eligible_from=eligible_from,
            url=trial.url,
            cohort=cohort,
            criteria=results,
            notes=notes,
        )

    def criterion(
        self,
        patient: PatientFacts,
        c: Criterion,
        as_of: date,
        rule: Rule | None = None,
        ctx: Ctx | None = None,
    ) -> CriterionResult:
        """`ctx`: the trial's context for this criterion's type (Engine.evaluate), else one of its own."""
        rule = rule if rule is not None else c.compiled
        if rule is None:
            return CriterionResult(
                id=c.id,
                type=c.type,
                text=c.text,
                outcome="review",
                until=None,
                explanation=None,
                evidence=[],
                missing=[],
                review=[c.review or "needs a person"],
            )
        if ctx is None:
            ctx = Ctx(patient, as_of, self.m, c.type == "exclusion", False, Memo(patient, as_of))
        r = self.rule(rule, ctx)
        holds, fails_when = (Truth.TRUE, Truth.FALSE) if c.type == "inclusion" else (Truth.FALSE, Truth.TRUE)
        until = None
        if r.truth == holds:
            outcome = "pass"
        elif r.truth == fails_when:
            outcome = "fail"
            until = r.until
        elif r.truth == Truth.UNKNOWN:
            outcome = "unknown"
        else:
            outcome = "review"
        # review notes only from the branches that decided: a pass or a fail carries none of its own
        review = list(dict.fromkeys(r.notes)) if outcome in ("review", "unknown") else []
        # the record itself raised this review (evidence points towards a fail), unlike a standing one
        flagged = outcome == "review" and r.doubt
        if outcome == "pass" and c.also_review:
            outcome = "review"
            review.append(c.also_review)
        elif c.also_review and outcome == "review":
            review.append(c.also_review)
        return CriterionResult(
            id=c.id,
            type=c.type,
            text=c.text,
            outcome=outcome,
            until=until,
            explanation="; ".join(dict.fromkeys(r.why)) or None,
            evidence=dedupe_evidence(r.evidence),
            missing=list(dict.fromkeys(r.missing)),
            review=review,
            flagged=flagged,
        )

    def rule(self, rule: Rule, ctx: Ctx) -> Res:
        """Combinators here (by their class: a rule tree has about 430 nodes a patient); every leaf through
        the evaluator its family module registered."""
        combine = self._combinators.get(type(rule))
        if combine is not None:
            return combine(rule, ctx)
        return LEAVES[rule.kind].evaluate(rule, ctx)

    def _all(self, rule: All, ctx: Ctx) -> Res:
        return all_of([self.rule(x, ctx) for x in rule.items])

    def _any(self, rule: AnyOf, ctx: Ctx) -> Res:
        return any_of([self.rule(x, ctx) for x in rule.items])

    def _any_available(self, rule: AnyAvailable, ctx: Ctx) -> Res:
        rs = [self.rule(x, ctx) for x in rule.items]
        known = [r for r in rs if r.truth is not Truth.UNKNOWN]
        return any_of(known or rs)

    def _review(self, rule: ReviewLeaf, ctx: Ctx) -> Res:
        return Res(Truth.REVIEW, notes=[rule.reason], standing=[rule.reason])

    def _not(self, rule: Not, ctx: Ctx) -> Res:
        r = self.rule(rule.item, ctx.flipped())
        return Res(FLIP.get(r.truth, r.truth), r.until, r.evidence, r.missing, r.notes, r.why, r.standing)

    def _none_on_record(self, rule: NoneOnRecord, ctx: Ctx) -> Res:
        r = self.rule(rule.item, ctx)
        if r.truth is Truth.UNKNOWN and self.rule(rule.item, ctx.absence_readable()).truth is Truth.FALSE:
            return Res(Truth.REVIEW, notes=[rule.reason])  # read completely, nothing found (audit 2, NS16)
        return r

    def _implies(self, rule: Implies, ctx: Ctx) -> Res:
        return any_of([self._not(Not("not", rule.condition), ctx), self.rule(rule.then, ctx)])


FLIP = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}
