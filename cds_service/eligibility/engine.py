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

import operator
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum

from cds_service.eligibility.report import CriterionResult, Evidence, TrialResult
from cds_service.eligibility.rules import (
    Age,
    All,
    Answer,
    AnyAvailable,
    AnyOf,
    ConditionRule,
    CurrentDose,
    GradeCount,
    Implies,
    Lab,
    MedicationRule,
    Not,
    Positive,
    ProcedureRule,
    ReviewLeaf,
    Rule,
    Sex,
    Treated,
    Window,
)
from cds_service.eligibility.trials import Criterion, Trial
from cds_service.fhir.derive import age_on, derived_result
from cds_service.fhir.facts import MEDICATION_SOURCES, ConditionFact, LabResult, MedicationFact, PatientFacts
from cds_service.fhir.mappings import Mappings

SOURCE_NAMES = {
    "MedicationStatement": "medication statements (MedicationStatement)",
    "MedicationRequest": "medication orders (MedicationRequest)",
    "Immunization": "immunizations (Immunization)",
}
_CMP = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class Truth(Enum):
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"
    REVIEW = "review"


@dataclass(slots=True)
class Res:
    truth: Truth
    until: date | None = None  # the date this truth value is expected to flip; None = not expected to
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)

    def merge(self, others: list[Res]) -> Res:
        for o in others:
            self.evidence.extend(o.evidence)
            self.missing.extend(o.missing)
            self.notes.extend(o.notes)
            self.why.extend(o.why)
        return self


def _max_until(results: list[Res]) -> date | None:
    """Latest flip date; a permanent member (None) makes the whole permanent."""
    dates = [r.until for r in results]
    return None if any(d is None for d in dates) else max(dates)  # type: ignore[type-var]


def _min_until(results: list[Res]) -> date | None:
    dates = [r.until for r in results if r.until is not None]
    return min(dates) if dates else None


@dataclass(slots=True)
class Ctx:
    facts: PatientFacts
    as_of: date
    m: Mappings
    exclusion: bool
    negated: bool = False
    starts: dict[Window, date] = field(default_factory=dict)  # window -> its first day, per evaluation

    def since(self, window: Window) -> date:
        day = self.starts.get(window)
        if day is None:
            day = self.starts[window] = window.start(self.as_of)
        return day

    @property
    def absent(self) -> Truth:
        """What "none on record" means here: FALSE only where FALSE cannot fail the criterion."""
        return Truth.FALSE if self.exclusion != self.negated else Truth.UNKNOWN

    def flipped(self) -> Ctx:
        return Ctx(self.facts, self.as_of, self.m, self.exclusion, not self.negated, self.starts)


class Engine:
    """Holds the mappings; evaluates trials for patients."""

    def __init__(self, mappings: Mappings, horizon_days: int = 365) -> None:
        self.m = mappings
        self.horizon = timedelta(days=horizon_days)

    # --- trial ------------------------------------------------------------------------------------

    def evaluate(self, patient: PatientFacts, trial: Trial, as_of: date) -> TrialResult:
        starts: dict[Window, date] = {}
        results = [self.criterion(patient, c, as_of, rule, starts) for c, rule in trial.plan]
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
        elif any(r.outcome == "unknown" for r in results):
            status = "possibly-eligible"
        else:
            status = "likely-eligible"
        return TrialResult(
            id=trial.id,
            title=trial.title,
            status=status,
            eligible_from=eligible_from,
            url=trial.url,
            criteria=results,
            notes=notes,
        )

    def criterion(
        self,
        patient: PatientFacts,
        c: Criterion,
        as_of: date,
        rule: Rule | None = None,
        starts: dict[Window, date] | None = None,
    ) -> CriterionResult:
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
        ctx = Ctx(patient, as_of, self.m, exclusion=c.type == "exclusion", starts=starts if starts is not None else {})
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
            evidence=_dedupe_evidence(r.evidence),
            missing=list(dict.fromkeys(r.missing)),
            review=review,
        )

    # --- combinators ------------------------------------------------------------------------------

    def rule(self, rule: Rule, ctx: Ctx) -> Res:
        if isinstance(rule, All):
            return self._all([self.rule(x, ctx) for x in rule.items])
        if isinstance(rule, AnyOf):
            return self._any([self.rule(x, ctx) for x in rule.items])
        if isinstance(rule, AnyAvailable):
            rs = [self.rule(x, ctx) for x in rule.items]
            known = [r for r in rs if r.truth != Truth.UNKNOWN]
            if known:
                return self._any(known)
            return self._any(rs)
        if isinstance(rule, ReviewLeaf):
            return Res(Truth.REVIEW, notes=[rule.reason])
        if isinstance(rule, Not):
            r = self.rule(rule.item, ctx.flipped())
            flip = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}
            r.truth = flip.get(r.truth, r.truth)
            return r
        if isinstance(rule, Implies):
            return self._any([self.rule(Not("not", rule.condition), ctx), self.rule(rule.then, ctx)])
        leaf = getattr(self, f"_{rule.kind}")
        return leaf(rule, ctx)

    @staticmethod
    def _all(rs: list[Res]) -> Res:
        false = [r for r in rs if r.truth == Truth.FALSE]
        if false:
            return Res(Truth.FALSE, _max_until(false)).merge(false)
        for t in (Truth.UNKNOWN, Truth.REVIEW):
            if any(r.truth == t for r in rs):
                return Res(t).merge([r for r in rs if r.truth != Truth.TRUE])
        return Res(Truth.TRUE, _min_until(rs)).merge(rs)

    @staticmethod
    def _any(rs: list[Res]) -> Res:
        true = [r for r in rs if r.truth == Truth.TRUE]
        if true:
            return Res(Truth.TRUE, _max_until(true)).merge(true)
        for t in (Truth.UNKNOWN, Truth.REVIEW):
            if any(r.truth == t for r in rs):
                return Res(t).merge([r for r in rs if r.truth != Truth.FALSE])
        return Res(Truth.FALSE, _min_until(rs)).merge(rs)

    # --- leaves: demographics -------------------------------------------------------------------

    def _age(self, rule: Age, ctx: Ctx) -> Res:
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

    def _sex(self, rule: Sex, ctx: Ctx) -> Res:
        g = ctx.facts.gender
        if g not in ("female", "male"):
            return Res(Truth.UNKNOWN, missing=["sex (Patient.gender)"])
        ev = [Evidence(resource=ctx.facts.patient, label="Sex", value=g)]
        return Res(Truth.TRUE if g == rule.sex else Truth.FALSE, evidence=ev)

    # --- leaves: observations --------------------------------------------------------------------

    def _current(self, var: str, within: Window | None, ctx: Ctx, usable) -> tuple[LabResult | None, str | None]:
        """Newest result of `var` dated within the recency window that `usable` accepts.

        Returns (result, None) or (None, why-missing)."""
        v = self.m.variables[var]
        window = within or Window(v.current_days, "day")
        since = ctx.since(window)
        seen_problem = None
        older: LabResult | None = None
        for r in ctx.facts.labs.get(var, ()):
            if r.when is None or r.when > ctx.as_of:
                continue
            if r.when < since:
                older = older or r
                continue
            if usable(r):
                return r, None
            seen_problem = seen_problem or r.problem
        if v.derived:
            weight_since = ctx.since(Window(self.m.variables["weight"].current_days, "day"))
            d, missing_inputs = derived_result(ctx.facts, var, v.derived, since, ctx.as_of, weight_since)
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

    def _evidence(self, r: LabResult, note: str | None = None) -> Evidence:
        label = self.m.variables[r.variable].label
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

    def _lab(self, rule: Lab, ctx: Ctx) -> Res:
        r, why = self._current(rule.var, rule.within, ctx, lambda x: x.value is not None)
        if r is None:
            return Res(Truth.UNKNOWN, missing=[why or rule.var])
        assert r.value is not None
        label = self.m.variables[rule.var].label
        note = None
        if rule.uln is not None or rule.lln is not None:
            limit, source, mult, name = (
                (r.uln, r.uln_source, rule.uln, "upper")
                if rule.uln is not None
                else (r.lln, r.lln_source, rule.lln, "lower")
            )
            if limit is None or not limit:
                return Res(Truth.UNKNOWN, missing=[f"{label}: {name} limit of normal (no reference range, no default)"])
            threshold = mult * limit  # type: ignore[operator]
            abbr = f"{name[0].upper()}LN"
            note = f"{abbr} {limit:g} {r.unit} ({source}); value is {r.value / limit:.2f} x {abbr}"
        else:
            threshold = rule.value  # type: ignore[assignment]
        if r.comparator in ("<", "<="):
            # "<X": the true value is below X. Decide only what that bound decides.
            if rule.op in (">=", ">") and r.value <= threshold:
                ok = False
            elif rule.op in ("<=", "<") and r.value <= threshold:
                ok = True
            else:
                return Res(
                    Truth.UNKNOWN,
                    evidence=[self._evidence(r, note)],
                    missing=[f"{label}: result '<{r.original_value}' cannot be compared with {rule.text}"],
                )
        elif r.comparator in (">", ">="):
            if rule.op in (">=", ">") and r.value >= threshold:
                ok = True
            elif rule.op in ("<=", "<") and r.value >= threshold:
                ok = False
            else:
                return Res(
                    Truth.UNKNOWN,
                    evidence=[self._evidence(r, note)],
                    missing=[f"{label}: result '>{r.original_value}' cannot be compared with {rule.text}"],
                )
        else:
            ok = _CMP[rule.op](r.value, threshold)
        return Res(
            Truth.TRUE if ok else Truth.FALSE,
            evidence=[self._evidence(r, note)],
            why=[f"{label} {r.value:g} {r.unit} {'meets' if ok else 'does not meet'} {rule.text}"],
        )

    def _positive(self, rule: Positive, ctx: Ctx) -> Res:
        r, why = self._current(rule.var, rule.within, ctx, lambda x: x.positive is not None)
        label = self.m.variables[rule.var].label
        if r is not None:
            return Res(
                Truth.TRUE if r.positive else Truth.FALSE,
                evidence=[self._evidence(r)],
                why=[f"{label} {'positive' if r.positive else 'negative'}"],
            )
        older = self._older_positive(rule.var, ctx)
        if older is not None:
            return older
        if rule.missing_is_absent and ctx.absent == Truth.FALSE and "Observation" in ctx.facts.gathered:
            return Res(Truth.FALSE, why=[f"no positive {label} on record"])
        return Res(Truth.UNKNOWN, missing=[why or rule.var])

    def _older_positive(self, var_key: str, ctx: Ctx) -> Res | None:
        """Positive findings outlast negatives: a positive older than the recency window, with no later
        negative, is never read as "absent". It counts for `positive_persists_days` (a pregnancy test:
        about ten months), and otherwise goes to a person."""
        var = self.m.variables[var_key]
        newest = next(
            (x for x in ctx.facts.labs.get(var_key, ()) if x.positive is not None and x.when and x.when <= ctx.as_of),
            None,
        )
        if newest is None or not newest.positive:
            return None
        assert newest.when is not None
        ev = [self._evidence(newest)]
        if var.positive_persists_days:
            until = newest.when + timedelta(days=var.positive_persists_days)
            if until > ctx.as_of:
                why = f"{var.label} positive on {newest.when.isoformat()}, no later negative on record"
                return Res(Truth.TRUE, until=until, evidence=ev, why=[why])
            return None
        note = f"{var.label} positive on {newest.when.isoformat()}, older than the screening window: still positive?"
        return Res(Truth.REVIEW, evidence=ev, notes=[note])

    def _grade_count(self, rule: GradeCount, ctx: Ctx) -> Res:
        hits: list[LabResult] = []
        missing: list[str] = []
        for var in rule.vars:
            r, why = self._current(var, rule.within, ctx, lambda x: x.answer is not None)
            if r is None:
                missing.append(why or var)
            elif r.answer in rule.grades:
                hits.append(r)
        grades = "/".join(sorted(rule.grades))
        ev = [self._evidence(r) for r in hits]
        if len(hits) >= rule.min:
            return Res(Truth.TRUE, evidence=ev, why=[f"{len(hits)} domain(s) graded {grades}"])
        if len(hits) + len(missing) >= rule.min and missing:
            if len(missing) == len(rule.vars):
                missing = [f"BILAG-2004 organ domain grades (none recorded in the last {rule.within or '60 days'})"]
            return Res(Truth.UNKNOWN, evidence=ev, missing=missing)
        return Res(Truth.FALSE, evidence=ev, why=[f"{len(hits)} domain(s) graded {grades}, need {rule.min}"])

    def _answer(self, rule: Answer, ctx: Ctx) -> Res:
        r, why = self._current(rule.var, rule.within, ctx, lambda x: x.answer is not None)
        if r is None:
            return Res(Truth.UNKNOWN, missing=[why or rule.var])
        ok = r.answer in rule.values
        label = self.m.variables[rule.var].label
        return Res(Truth.TRUE if ok else Truth.FALSE, evidence=[self._evidence(r)], why=[f"{label} {r.answer}"])

    # --- leaves: conditions ---------------------------------------------------------------------

    def _condition(self, rule: ConditionRule, ctx: Ctx) -> Res:
        labels = ", ".join(self.m.conditions.groups[g].label for g in sorted(rule.groups))
        found = _ConditionFindings()
        for c in ctx.facts.conditions:
            if c.groups & rule.groups:
                self._one_condition(rule, c, ctx, found)
        if found.definite:
            return Res(Truth.TRUE, _max_until(found.definite)).merge(found.definite)
        if found.review:
            return Res(Truth.REVIEW).merge(found.review)
        if found.too_recent:
            return Res(Truth.FALSE, _min_until(found.too_recent)).merge(found.too_recent)
        # From here on the answer rests on what is NOT on record: the problem list must have been read.
        if "Condition" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"problem list (Condition) not read, so {labels} cannot be ruled out"])
        if found.out_of_window:
            return Res(
                Truth.FALSE, why=[f"{labels}: none within {rule.within}" if rule.within else f"{labels}: not current"]
            )
        if ctx.absent == Truth.FALSE:
            return Res(Truth.FALSE, why=[f"no {labels} on record"])
        return Res(Truth.UNKNOWN, missing=[f"{labels}: no diagnosis on record"])

    def _one_condition(self, rule: ConditionRule, c: ConditionFact, ctx: Ctx, found: _ConditionFindings) -> None:
        ev = Evidence(
            resource=c.resource,
            label=c.display,
            date=c.onset or c.recorded,
            note=_condition_note(c.active, c.confirmed, c.abatement, c.history),
        )

        def review(note: str) -> None:
            found.review.append(Res(Truth.REVIEW, evidence=[ev], notes=[note]))

        if rule.active_only and (c.history or c.active is not True):
            if c.history or c.active is None:
                review(f"{c.display}: {'a history code' if c.history else 'status not recorded'}; is it current?")
            else:
                found.out_of_window = True
            return
        if rule.onset_before is not None:
            if c.onset is None:  # a recordedDate is when it was entered (migration, new clinic), not diagnosed
                review(f"{c.display}: date of diagnosis not recorded; diagnosed {rule.onset_before} ago or more?")
                return
            if c.onset > ctx.since(rule.onset_before):
                until = rule.onset_before.end_after(c.onset)
                why = f"{c.display} diagnosed {c.onset.isoformat()}, less than {rule.onset_before} ago"
                found.too_recent.append(Res(Truth.FALSE, until=until, evidence=[ev], why=[why]))
                return
        until: date | None = None
        if rule.within is not None:
            dated = self._condition_in_window(rule, c, ctx)
            if dated is None:
                found.out_of_window = True
                return
            if isinstance(dated, str):
                review(dated)
                return
            until = dated if dated != date.max else None
        if c.groups & rule.except_groups:
            review(f"{c.display}: {rule.except_review}")
        elif rule.match_review:
            review(f"{c.display}: {rule.match_review}")
        elif not c.confirmed:
            review(f"{c.display} is recorded as unconfirmed")
        else:
            found.definite.append(Res(Truth.TRUE, until=until, evidence=[ev], why=[f"{c.display} on record"]))

    @staticmethod
    def _condition_in_window(rule: ConditionRule, c: ConditionFact, ctx: Ctx) -> date | str | None:
        """Inside `rule.within`: the date it stops counting (date.max: still present); a review note; or
        None when outside. Events ("MI within 12 months") are dated by onset whatever their clinical status;
        presence ("active within") by the status, then abatement. History codes are never recent."""
        window = rule.within
        assert window is not None
        since = ctx.since(window)
        if c.history:
            if c.onset is not None and c.onset >= since:
                return f"{c.display}: a history code dated {c.onset.isoformat()}; was the event within {window}?"
            return None
        if rule.by_diagnosis:
            ref = c.onset
            if ref is not None and ref < since and c.active is True:
                return f"{c.display}: diagnosed {ref.isoformat()}, before the last {window}, and still recorded active"
        elif c.active is True:
            return date.max  # present now, so present within the window
        else:
            ref = c.abatement or c.onset
        if ref is None:
            what = "date of onset" if rule.by_diagnosis else "date"
            recorded = f" (only entered on {c.recorded.isoformat()})" if c.recorded else ""
            return f"{c.display}: {what} not recorded{recorded}; was it within {window}?"
        if ref < since:
            return None
        return window.end_after(ref)

    # --- leaves: procedures ---------------------------------------------------------------------

    def _procedure(self, rule: ProcedureRule, ctx: Ctx) -> Res:
        labels = ", ".join(self.m.procedures.groups[g].label for g in sorted(rule.groups))
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
            return Res(Truth.TRUE, _max_until(hits)).merge(hits)
        if review:
            return Res(Truth.REVIEW).merge(review)
        if "Procedure" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"procedures (Procedure) not read, so {labels} cannot be ruled out"])
        if outside or ctx.absent == Truth.FALSE:
            return Res(Truth.FALSE, why=[f"no {labels} {'within ' + str(rule.within) if rule.within else 'on record'}"])
        return Res(Truth.UNKNOWN, missing=[f"{labels}: none on record"])

    # --- leaves: medications --------------------------------------------------------------------

    def _meds(self, ings: frozenset[str], ctx: Ctx) -> list[MedicationFact]:
        return [m for m in ctx.facts.medications if m.ingredient in ings]

    @staticmethod
    def _med_evidence(m: MedicationFact, dose: float | None = None) -> Evidence:
        span = f"{m.start.isoformat() if m.start else '?'} to {m.end.isoformat() if m.end else 'ongoing'}"
        return Evidence(
            resource=m.resource,
            label=m.display,
            value=dose,
            unit="mg/d" if dose is not None else None,
            date=m.last_use() or m.start,
            note=f"{m.status}, {span}",
        )

    def _unread_sources(self, ingredients: frozenset[str], ctx: Ctx) -> list[str]:
        """The sources that could hold these drugs but were not read completely."""
        needed = list(MEDICATION_SOURCES)
        if any(self.m.medications.ingredients[i].cvx for i in ingredients):
            needed.append("Immunization")
        return [SOURCE_NAMES[s] for s in needed if s not in ctx.facts.gathered]

    def _dose(self, m: MedicationFact) -> float | None:
        """mg/day as criteria compare it: prednisone-equivalent for glucocorticoids (None without a verified
        factor: deflazacort 24 mg is not 24 mg of prednisone), the plain daily dose for anything else."""
        if m.ingredient in self.m.steroid_ingredients:
            return m.pred_eq_mg
        return m.daily_dose_mg

    def _medication(self, rule: MedicationRule, ctx: Ctx) -> Res:
        since = ctx.since(rule.within) if rule.within else None
        hits: list[Res] = []
        review: list[Res] = []
        unknown: list[Res] = []
        outside = False
        for m in self._meds(rule.ingredients, ctx):
            dose = self._dose(m)
            ev = self._med_evidence(m, dose)
            last = m.last_use()
            ongoing = m.ongoing(ctx.as_of)
            if not ongoing and last is None:
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: dates of use not recorded"]))
                continue
            if not ongoing and since is not None and last < since:  # type: ignore[operator]
                outside = True  # the window first: a course stopped years ago needs no dose
                continue
            if rule.dose_op is not None:
                if dose is None:
                    unknown.append(Res(Truth.UNKNOWN, evidence=[ev], missing=[self._dose_missing(m)]))
                    continue
                if not _CMP[rule.dose_op](dose, rule.dose_value):
                    outside = True
                    continue
            hit = self._medication_hit(rule, m, ev, ongoing, since, ctx)
            (review if hit.truth == Truth.REVIEW else hits).append(hit)
        if hits:
            return Res(Truth.TRUE, _max_until(hits)).merge(hits)
        if unknown:
            return Res(Truth.UNKNOWN).merge(unknown + review)
        if review:
            return Res(Truth.REVIEW).merge(review)
        unread = self._unread_sources(rule.ingredients, ctx)
        if unread:  # "none (within the window) on record" needs every source that could hold the drug
            return Res(Truth.UNKNOWN, missing=[f"{rule.label}: {' and '.join(unread)} not read"])
        if outside:
            return Res(
                Truth.FALSE,
                why=[f"no {rule.label} within {rule.within}" if rule.within else f"no qualifying {rule.label}"],
            )
        if ctx.absent == Truth.FALSE:
            return Res(Truth.FALSE, why=[f"no {rule.label} on record"])
        return Res(Truth.UNKNOWN, missing=[f"{rule.label}: none on record"])

    def _dose_missing(self, m: MedicationFact) -> str:
        if m.ingredient in self.m.steroid_ingredients:
            return f"prednisone-equivalent daily dose of {m.display} ({m.resource})"
        return f"daily dose of {m.display} ({m.resource})"

    @staticmethod
    def _medication_hit(
        rule: MedicationRule, m: MedicationFact, ev: Evidence, ongoing: bool, since: date | None, ctx: Ctx
    ) -> Res:
        if rule.match_review:
            return Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: {rule.match_review}"])
        if ongoing:
            if rule.if_ongoing == "review":
                note = (
                    rule.ongoing_note.format(drug=m.display)
                    if rule.ongoing_note
                    else f"currently taking {m.display}; must stop {rule.within} before enrolment"
                )
                return Res(Truth.REVIEW, evidence=[ev], notes=[note])
            return Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} ongoing"])
        last = min(m.last_use(), ctx.as_of)  # type: ignore[type-var]
        if since is None:
            return Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} on record"])
        until = rule.within.end_after(last) + timedelta(days=1)  # type: ignore[union-attr]
        note = "" if m.end else " (end date not recorded: the earliest possible date)"
        why = f"{m.display} last used {last.isoformat()}, within {rule.within}; clear from {until.isoformat()}{note}"
        return Res(Truth.TRUE, until=until, evidence=[ev], why=[why])

    def _treated(self, rule: Treated, ctx: Ctx) -> Res:
        courses: dict[str, list[tuple[date, date]]] = {}
        evidence: dict[str, list[Evidence]] = {}
        undated = False
        for m in self._meds(rule.ingredients, ctx):
            if m.start is None:
                undated = True
                continue
            end = min(m.end or ctx.as_of, ctx.as_of) if (m.end or m.ongoing(ctx.as_of)) else m.start
            drug = self.m.medications.ingredients[m.ingredient].drug  # mofetil and mycophenolic acid: one drug
            courses.setdefault(drug, []).append((m.start, max(end, m.start)))
            evidence.setdefault(drug, []).append(self._med_evidence(m))
        need = (rule.min_duration.end_after(ctx.as_of) - ctx.as_of).days if rule.min_duration else 0
        enough = [d for d, spans in courses.items() if _longest_course(spans) >= need]
        if len(enough) >= rule.min_distinct:
            ev = [e for d in enough for e in evidence[d]]
            span = f" for {rule.min_duration} or longer" if rule.min_duration else ""
            return Res(Truth.TRUE, evidence=ev, why=[f"{len(enough)} of {rule.label}{span}"])
        ev = [e for es in evidence.values() for e in es]
        what = (f"{rule.min_distinct} different {rule.label}" if rule.min_distinct > 1 else rule.label) + (
            f" for at least {rule.min_duration}" if rule.min_duration else ""
        )
        unread = self._unread_sources(rule.ingredients, ctx)
        if ctx.absent == Truth.FALSE and not undated and not unread:
            return Res(Truth.FALSE, evidence=ev, why=[f"record shows {len(enough)} of {what}"])
        # Medication history is often incomplete (outside prescriptions): never a definite fail here.
        not_read = f" ({' and '.join(unread)} not read)" if unread else ""
        return Res(
            Truth.UNKNOWN, evidence=ev, missing=[f"treatment history: record shows {len(enough)} of {what}{not_read}"]
        )

    def _current_dose(self, rule: CurrentDose, ctx: Ctx) -> Res:
        per_drug: dict[str, list[MedicationFact]] = {}
        for m in self._meds(rule.ingredients, ctx):
            if m.ongoing(ctx.as_of):
                per_drug.setdefault(m.ingredient, []).append(m)
        total = 0.0
        ev: list[Evidence] = []
        for records in per_drug.values():
            # One therapy, one count: a statement and the order behind it (or repeated orders) are one
            # ongoing course, so its dose is the highest recorded, never the sum of the records.
            doses = [(d, m) for m in records if (d := self._dose(m)) is not None]
            if not doses:
                m = records[0]
                return Res(Truth.UNKNOWN, evidence=[self._med_evidence(m)], missing=[self._dose_missing(m)])
            dose, m = max(doses, key=lambda t: t[0])
            total += dose
            ev.append(self._med_evidence(m, dose))
        ok = _CMP[rule.op](total, rule.value)
        why = [
            f"current {rule.label} {total:g} mg/d prednisone-equivalent {rule.op} {rule.value:g}: "
            f"{'yes' if ok else 'no'}"
        ]
        # A dose on record already above a ">=" bar, or over a "<=" bar, decides whatever else is unread.
        if (ok and rule.op in (">=", ">")) or (not ok and rule.op in ("<=", "<")):
            return Res(Truth.TRUE if ok else Truth.FALSE, evidence=ev, why=why)
        unread = self._unread_sources(rule.ingredients, ctx)
        if unread:
            return Res(Truth.UNKNOWN, evidence=ev, missing=[f"current {rule.label}: {' and '.join(unread)} not read"])
        if ok:
            return Res(Truth.TRUE, evidence=ev, why=why)
        if not ev and ctx.absent != Truth.FALSE:
            return Res(Truth.UNKNOWN, missing=[f"current {rule.label}: none on record"])
        return Res(Truth.FALSE, evidence=ev, why=why)


def _longest_course(spans: list[tuple[date, date]], gap_days: int = 100) -> int:
    """Days of the longest continuous course. Records of one drug less than `gap_days` apart (repeat
    prescriptions without a supply duration, a statement and its orders) are one course."""
    best = 0
    start: date | None = None
    end: date | None = None
    for s, e in sorted(spans):
        if start is None or end is None or (s - end).days > gap_days:
            start, end = s, e
        else:
            end = max(end, e)
        best = max(best, (end - start).days)
    return best


@dataclass(slots=True)
class _ConditionFindings:
    definite: list[Res] = field(default_factory=list)
    review: list[Res] = field(default_factory=list)
    too_recent: list[Res] = field(default_factory=list)
    out_of_window: bool = False


def _condition_note(active: bool | None, confirmed: bool, abatement: date | None, history: bool = False) -> str:
    parts = [{True: "active", False: "inactive", None: "status not recorded"}[active]]
    if history:
        parts.append("history code")
    if abatement:
        parts.append(f"abated {abatement.isoformat()}")
    if not confirmed:
        parts.append("unconfirmed")
    return ", ".join(parts)


def _dedupe_evidence(ev: list[Evidence]) -> list[Evidence]:
    seen: set[tuple] = set()
    out = []
    for e in ev:
        key = (e.resource, e.label, e.value, e.date)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
