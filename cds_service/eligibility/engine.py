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

import threading
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from typing import Any

from cds_service.eligibility.cohort import entry
from cds_service.eligibility.logic import Ctx, Join, Memo, Res, Truth, all_of, any_of, dedupe_evidence, lean
from cds_service.eligibility.report import (
    CriterionResult,
    CriterionVerdict,
    Outcome,
    TrialResult,
    TrialStatus,
    TrialVerdict,
)
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
    parts,
)
from cds_service.eligibility.trials import Criterion, Trial
from cds_service.fhir.facts import PatientFacts
from cds_service.fhir.kept import Kept
from cds_service.fhir.mappings import Mappings


class Engine:
    """Holds the mappings; evaluates trials for patients. Each rule kind's evaluation lives in its family
    module (demographics, labs, conditions, medications, procedures); the combinators are compiled below."""

    def __init__(self, mappings: Mappings, horizon_days: int = 365) -> None:
        self.m = mappings
        self.horizon = timedelta(days=horizon_days)
        # per trial (by identity; the trial is held, so its id is not reused) and whether for a verdict
        # (`logic.lean`): its criteria with their rules compiled to closures, built on first use
        self._plans: dict[tuple[int, bool], tuple[Trial, list[tuple[Criterion, Compiled | None]]]] = {}
        # one number per distinct leaf of every plan: a leaf the five trials ask twice is evaluated once
        self._slots: dict[Rule, int] = {}
        # plans compile on a trial's first evaluation, and the service evaluates hooks in worker threads: two
        # compiling at once could read one `len(slots)` and give two different leaves one number
        self._compiling = threading.Lock()
        # what each criterion answers for a record holding none of the facts it reads (`_compiled`), by its
        # compiled rule, the date, the way absence cuts and the sources read. Results are never changed once
        # made, so patients share them; two threads filling one key at once only make it twice.
        # Bounded: unread counts vary by record, so the keys can too; past the bound the memo starts again.
        self._answers: Kept[tuple, Res] = Kept(ANSWERS_KEPT)
        # the facts each criterion's compiled rule reads, by the rule (`_compiled`): for `_explained`
        self._reads: dict[Compiled, frozenset[str]] = {}
        # a criterion's explained result for a record holding none of the facts it reads, keyed as `_answers`
        # is: made once, shared by the reports of every such record, and so never changed once made
        self._explanations: Kept[tuple, CriterionResult] = Kept(ANSWERS_KEPT)

    def plan(self, trial: Trial, verdict: bool = False) -> list[tuple[Criterion, Compiled | None]]:
        """The trial's criteria in page order, each with its rule compiled (`compile_rule`), or None. A
        `verdict` plan's results carry no explanation that cannot change an outcome (`logic.lean`)."""
        key = (id(trial), verdict)
        held = self._plans.get(key)
        if held is None or held[0] is not trial:
            with self._compiling:  # one plan compiles at a time (the numbering is shared); then read freely
                held = self._plans.get(key)
                if held is None or held[0] is not trial:
                    join = lean if verdict else None
                    compiled = [(c, self._compiled(r, join) if r else None) for c, r in trial.plan]
                    held = self._plans[key] = (trial, compiled)
        return held[1]

    def _compiled(self, rule: Rule, join: Join | None) -> Compiled:
        """A criterion's rule compiled, and answered without being evaluated for a record that holds none of
        the facts it reads (`reads_of`): what it answered for a record holding nothing, with the same sources
        read, on the same date. About half of the five trials' hundred criteria read no fact of a patient's
        record (no HIV test, no transplant, no rituximab), and they cost the same for every patient."""
        run = compile_rule(rule, self._slots, join)
        reads = reads_of(rule, self.m)
        if reads is None:
            return run
        answers = self._answers

        def answered(ctx: Ctx) -> Res:
            memo = ctx.memo
            if not reads.isdisjoint(memo.on_record()):
                return run(ctx)
            key = (run, ctx.as_of, ctx.exclusion, ctx.negated, memo.read())
            r = answers.get(key)
            return r if r is not None else answers.keep(key, run(ctx.without_facts()))

        self._reads[answered] = reads
        return answered

    def _explained(self, c: Criterion, run: Compiled | None, ctx: Ctx) -> CriterionResult:
        """`outcome`, made once for a criterion that reads none of the record's facts: what `_compiled`
        answers it is the same for every such record, and so is its explanation (about half of a report's
        criteria, and a third of the cost of explaining them)."""
        reads = self._reads.get(run) if run is not None else None
        if reads is None or not reads.isdisjoint(ctx.memo.on_record()):
            return self.outcome(c, run, ctx)
        key = (run, ctx.as_of, ctx.exclusion, ctx.memo.read())
        made = self._explanations.get(key)
        return made if made is not None else self._explanations.keep(key, self.outcome(c, run, ctx))

    def evaluate(self, patient: PatientFacts, trial: Trial, as_of: date, memo: Memo | None = None) -> TrialResult:
        """`memo`: shared by the trials this engine evaluates for this patient on this date (Catalog.report)."""
        cohort = entry(trial, patient, self.m)
        if cohort.outcome != "in":  # outside the population the trial studies: no criterion is read
            return TrialResult(id=trial.id, title=trial.title, status=_OUTSIDE[cohort.outcome], url=trial.url,
                               cohort=cohort, criteria=[])  # fmt: skip
        ctx = self._contexts(patient, as_of, memo)
        results = [self._explained(c, run, ctx[c.type == "exclusion"]) for c, run in self.plan(trial)]
        horizon = as_of + self.horizon
        for i, r in enumerate(results):
            if r.outcome == "fail" and r.until is not None and r.until > horizon:
                # A bar that lifts beyond the horizon is a fail today, not "possibly eligible from 2032".
                beyond = f"eligible again only from {r.until.isoformat()}, beyond {self.horizon.days} days"
                said = f"{r.explanation}; {beyond}" if r.explanation else beyond
                results[i] = r.model_copy(update={"explanation": said})  # a result may be shared: a copy
        notes = list(trial.notes)
        if patient.deceased:
            died = f" ({patient.deceased_date.isoformat()})" if patient.deceased_date else ""
            notes.insert(0, f"the patient is recorded as deceased{died}")
        status, eligible_from = self._status(patient, as_of, [(r.outcome, r.until, r.flagged) for r in results])
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

    def verdict(self, patient: PatientFacts, trial: Trial, as_of: date, memo: Memo | None = None) -> TrialVerdict:
        """What `evaluate` decides, without the explanations a card shows: the status and each criterion's
        outcome, all a screen keeps. Building the explanations is about a third of an evaluation."""
        cohort = entry(trial, patient, self.m)
        if cohort.outcome != "in":
            return TrialVerdict(trial.id, _OUTSIDE[cohort.outcome], None, cohort, [])
        ctx, plan = self._contexts(patient, as_of, memo), self.plan(trial, verdict=True)
        decided = [decide(c, run(ctx[c.type == "exclusion"])) if run else FOR_A_PERSON for c, run in plan]
        status, eligible_from = self._status(patient, as_of, decided)
        outcomes = [CriterionVerdict(c.id, d[0]) for (c, _), d in zip(plan, decided, strict=True)]
        return TrialVerdict(trial.id, status, eligible_from, cohort, outcomes)

    def _contexts(self, patient: PatientFacts, as_of: date, memo: Memo | None) -> dict[bool, Ctx]:
        """The contexts of a trial's criteria, by whether the criterion is an exclusion."""
        if memo is None or memo.facts is not patient or memo.as_of != as_of or memo.engine is not self:
            memo = Memo(patient, as_of, engine=self)  # leaf results are kept by this engine's numbers
        return {e: Ctx(patient, as_of, self.m, e, False, memo) for e in (False, True)}

    def _status(self, patient: PatientFacts, as_of: date, decided: list[Decision]) -> tuple[TrialStatus, date | None]:
        """The trial's status and the date it is possibly eligible from, from its criteria's (outcome,
        until, flagged)."""
        horizon = as_of + self.horizon
        if patient.deceased or any(o == "fail" and (u is None or u > horizon) for o, u, _ in decided):
            return "ineligible", None
        temporary = [u for o, u, _ in decided if o == "fail" and u is not None]
        if temporary:
            return "possibly-eligible", max(temporary)
        if any(o == "unknown" or flagged for o, _, flagged in decided):
            return "possibly-eligible", None  # data missing, or the record points towards an exclusion
        return "likely-eligible", None

    def criterion(self, patient: PatientFacts, c: Criterion, as_of: date) -> CriterionResult:
        """One criterion on its own (a trial's are evaluated together by `evaluate`)."""
        ctx = Ctx(patient, as_of, self.m, c.type == "exclusion", False, Memo(patient, as_of))
        return self.outcome(c, compile_rule(c.compiled) if c.compiled is not None else None, ctx)

    def outcome(self, c: Criterion, run: Compiled | None, ctx: Ctx) -> CriterionResult:
        """The criterion's outcome from its compiled rule `run` (None: a criterion for a person) in `ctx`, the
        context of its type, with the explanation, evidence, what is missing and what a person must review."""
        if run is None:
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
        r = run(ctx)
        outcome, until, flagged = decide(c, r)
        # review notes only from the branches that decided: a pass or a fail carries none of its own
        review = list(dict.fromkeys(r.notes)) if r.truth is Truth.UNKNOWN or r.truth is Truth.REVIEW else []
        if c.also_review and outcome == "review":  # a pass with a standing note, or a review
            review.append(c.also_review)
        return CriterionResult(
            id=c.id,
            type=c.type,
            text=c.text,
            outcome=outcome,
            until=until,
            explanation=("; ".join(dict.fromkeys(r.why)) or None) if r.why else None,
            evidence=dedupe_evidence(r.evidence) if r.evidence else [],
            missing=list(dict.fromkeys(r.missing)) if r.missing else [],
            review=review,
            flagged=flagged,
        )


Decision = tuple[Outcome, date | None, bool]  # a criterion's outcome, the date a fail lifts, flagged
FOR_A_PERSON: Decision = ("review", None, False)  # a criterion with no rule
_OUTSIDE: dict[str, TrialStatus] = {"out": "ineligible", "unknown": "not-assessed"}  # by cohort entry


def decide(c: Criterion, r: Res) -> Decision:
    """The criterion's outcome from its rule's result: the result that holds passes, the opposite fails
    (until the date it lifts, if any), unknown stays unknown, and the rest is a review. `flagged`: a review
    the record raised (evidence points towards a fail), unlike a standing one. A pass of a criterion with
    a standing review note (`also_review`) is a review."""
    holds, fails_when = (Truth.TRUE, Truth.FALSE) if c.type == "inclusion" else (Truth.FALSE, Truth.TRUE)
    t = r.truth
    if t is holds:
        return ("review" if c.also_review else "pass"), None, False
    if t is fails_when:
        return "fail", r.until, False
    if t is Truth.UNKNOWN:
        return "unknown", None, False
    return "review", None, r.doubt


Compiled = Callable[[Ctx], Res]  # a rule compiled: the patient's context in, the rule's result out
ANSWERS_KEPT = 20_000  # Engine._answers: criteria x dates x ways of reading sources, then it starts again


def reads_of(rule: Rule, m: Mappings) -> frozenset[str] | None:
    """Every fact of a record the rule can read (`rules.register`'s `reads`, through its combinators), or None
    when some leaf may read anything. A review reads nothing: it is the same for every record."""
    items = parts(rule)
    if items is not None:
        reads = [reads_of(r, m) for r in items]
        return None if any(r is None for r in reads) else frozenset().union(*reads)  # type: ignore[arg-type]
    kind = LEAVES.get(rule.kind)
    return kind.reads(rule, m) if kind is not None and kind.reads is not None else None


Slots = dict[Rule, int]  # a number per distinct leaf, shared by the plans of one engine


def compile_rule(rule: Rule, slots: Slots | None = None, join: Join | None = None) -> Compiled:
    """The rule as a closure: combinators (below, by class) call their items' closures directly, and a leaf
    is its family module's evaluator (rules.LEAVES) bound to the leaf. Built once per trial (Engine.plan), so
    a patient's evaluation walks no rule tree: about 430 nodes a patient for the five trials.

    With `slots`, equal leaves share a number (given here, when the plan is built) and a leaf's result is
    kept in the patient's memo under it and the way absence cuts, so a leaf several criteria or trials ask
    (262 a patient, 176 distinct) is evaluated once. Results are never changed after they are made (the
    combinators build new ones), so sharing one is safe. `join`: how combinators make their results
    (`logic.lean` for a verdict; a leaf's result is the same either way)."""
    make = _COMPILERS.get(type(rule))
    if make is not None:
        return make(rule, slots, join)
    evaluate = partial(LEAVES[rule.kind].evaluate, rule)
    if slots is None:
        return evaluate
    try:
        base = 4 * slots.setdefault(rule, len(slots))
    except TypeError:  # a leaf kind holding a list cannot be numbered: evaluated each time it is asked
        return evaluate

    def run(ctx: Ctx) -> Res:
        key = base + 2 * ctx.exclusion + ctx.negated
        kept = ctx.memo.leaves
        r = kept.get(key)
        if r is None:
            r = kept[key] = evaluate(ctx)
        return r

    return run


def _all(rule: All, slots: Slots | None, join: Join | None) -> Compiled:
    items = tuple(compile_rule(r, slots, join) for r in rule.items)
    return lambda ctx: all_of([f(ctx) for f in items], join)


def _any(rule: AnyOf, slots: Slots | None, join: Join | None) -> Compiled:
    items = tuple(compile_rule(r, slots, join) for r in rule.items)
    return lambda ctx: any_of([f(ctx) for f in items], join)


def _any_available(rule: AnyAvailable, slots: Slots | None, join: Join | None) -> Compiled:
    """Alternative tests of one thing: decided on those on record, unknown only when none is."""
    items = tuple(compile_rule(r, slots, join) for r in rule.items)

    def run(ctx: Ctx) -> Res:
        rs = [f(ctx) for f in items]
        known = [r for r in rs if r.truth is not Truth.UNKNOWN]
        return any_of(known or rs, join)

    return run


def _review(rule: ReviewLeaf, slots: Slots | None, join: Join | None) -> Compiled:
    reason = rule.reason
    return lambda ctx: Res(Truth.REVIEW, notes=[reason], standing=[reason])


def _not(rule: Not, slots: Slots | None, join: Join | None) -> Compiled:
    item = compile_rule(rule.item, slots, join)

    def run(ctx: Ctx) -> Res:
        r = item(ctx.flipped())
        t = r.truth
        flipped = Truth.FALSE if t is Truth.TRUE else Truth.TRUE if t is Truth.FALSE else t
        return Res(flipped, r.until, r.evidence, r.missing, r.notes, r.why, r.standing)

    return run


def _none_on_record(rule: NoneOnRecord, slots: Slots | None, join: Join | None) -> Compiled:
    item, reason = compile_rule(rule.item, slots, join), rule.reason

    def run(ctx: Ctx) -> Res:
        r = item(ctx)
        if r.truth is Truth.UNKNOWN and item(ctx.absence_readable()).truth is Truth.FALSE:
            return Res(Truth.REVIEW, notes=[reason])  # read completely, nothing found (audit 2, NS16)
        return r

    return run


def _implies(rule: Implies, slots: Slots | None, join: Join | None) -> Compiled:
    unless, then = _not(Not("not", rule.condition), slots, join), compile_rule(rule.then, slots, join)
    return lambda ctx: any_of([unless(ctx), then(ctx)], join)


_COMPILERS: dict[type, Callable[[Any, Slots | None, Join | None], Compiled]] = {
    All: _all, AnyOf: _any, AnyAvailable: _any_available, ReviewLeaf: _review, Not: _not,
    NoneOnRecord: _none_on_record, Implies: _implies,
}  # fmt: skip
