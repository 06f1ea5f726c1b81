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

from .derive import age_on, derived_result
from .facts import LabResult, MedicationFact, PatientFacts
from .mappings import Mappings
from .report import CriterionResult, Evidence, TrialResult
from .rules import (
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
    ReviewLeaf,
    Rule,
    Sex,
    Treated,
    Window,
)
from .trials import Criterion, Trial

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

    def __init__(self, mappings: Mappings) -> None:
        self.m = mappings

    # --- trial ------------------------------------------------------------------------------------

    def evaluate(self, patient: PatientFacts, trial: Trial, as_of: date) -> TrialResult:
        starts: dict[Window, date] = {}
        results = [self.criterion(patient, c, as_of, rule, starts) for c, rule in trial.plan]
        permanent_fail = any(r.outcome == "fail" and r.until is None for r in results)
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
        review = list(dict.fromkeys(r.notes))
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
            d, missing_inputs = derived_result(ctx.facts, var, v.derived, since, ctx.as_of)
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
        if r is None:
            if rule.missing_is_absent and ctx.absent == Truth.FALSE and "Observation" in ctx.facts.gathered:
                return Res(Truth.FALSE, why=[f"no positive {label} on record"])
            return Res(Truth.UNKNOWN, missing=[why or rule.var])
        return Res(
            Truth.TRUE if r.positive else Truth.FALSE,
            evidence=[self._evidence(r)],
            why=[f"{label} {'positive' if r.positive else 'negative'}"],
        )

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
        if "Condition" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"problem list (Conditions) not available to check for {labels}"])
        since = ctx.since(rule.within) if rule.within else None
        definite: list[Res] = []
        review: list[Res] = []
        too_recent: list[Res] = []
        out_of_window = False
        onset_by = ctx.since(rule.onset_before) if rule.onset_before else None
        for c in ctx.facts.conditions:
            if not (c.groups & rule.groups):
                continue
            ev = Evidence(
                resource=c.resource,
                label=c.display,
                date=c.onset or c.recorded,
                note=_condition_note(c.active, c.confirmed, c.abatement),
            )
            if rule.active_only and c.active is not True:
                if c.active is None:
                    review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{c.display}: is it current?"]))
                else:
                    out_of_window = True
                continue
            if onset_by is not None:
                first = c.onset or c.recorded
                if first is None:
                    review.append(
                        Res(
                            Truth.REVIEW,
                            evidence=[ev],
                            notes=[f"{c.display}: onset not recorded; diagnosed {rule.onset_before} ago?"],
                        )
                    )
                    continue
                if first > onset_by:
                    recent = Res(
                        Truth.FALSE,
                        until=rule.onset_before.end_after(first),
                        evidence=[ev],
                        why=[f"{c.display} diagnosed {first.isoformat()}, less than {rule.onset_before} ago"],
                    )
                    too_recent.append(recent)
                    continue
            until: date | None = None
            if since is not None and not c.active:
                # "diagnosed within": from the diagnosis date; otherwise: present within the window
                ref = (c.onset or c.recorded) if rule.by_diagnosis else (c.abatement or c.onset)
                if ref is None:
                    what = "date of diagnosis" if rule.by_diagnosis else "date"
                    note = f"{c.display}: {what} not recorded; was it within {rule.within}?"
                    review.append(Res(Truth.REVIEW, evidence=[ev], notes=[note]))
                    continue
                if ref < since:
                    out_of_window = True
                    continue
                if rule.by_diagnosis or c.active is False:
                    until = rule.within.end_after(ref)  # type: ignore[union-attr]
            if c.groups & rule.except_groups:
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{c.display}: {rule.except_review}"]))
            elif rule.match_review:
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{c.display}: {rule.match_review}"]))
            elif not c.confirmed:
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{c.display} is recorded as unconfirmed"]))
            else:
                definite.append(Res(Truth.TRUE, until=until, evidence=[ev], why=[f"{c.display} on record"]))
        if definite:
            return Res(Truth.TRUE, _max_until(definite)).merge(definite)
        if review:
            return Res(Truth.REVIEW).merge(review)
        if too_recent:
            return Res(Truth.FALSE, _min_until(too_recent)).merge(too_recent)
        if out_of_window:
            return Res(
                Truth.FALSE, why=[f"{labels}: none within {rule.within}" if rule.within else f"{labels}: not current"]
            )
        if ctx.absent == Truth.FALSE:
            return Res(Truth.FALSE, why=[f"no {labels} on record"])
        return Res(Truth.UNKNOWN, missing=[f"{labels}: no diagnosis on record"])

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

    def _medication(self, rule: MedicationRule, ctx: Ctx) -> Res:
        if "Medication" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"medication history not available to check for {rule.label}"])
        since = ctx.since(rule.within) if rule.within else None
        hits: list[Res] = []
        review: list[Res] = []
        unknown: list[Res] = []
        outside = False
        for m in self._meds(rule.ingredients, ctx):
            dose = m.pred_eq_mg if m.pred_eq_mg is not None else m.daily_dose_mg
            ev = self._med_evidence(m, dose)
            if rule.dose_op is not None:
                if dose is None:
                    unknown.append(
                        Res(Truth.UNKNOWN, evidence=[ev], missing=[f"daily dose of {m.display} ({m.resource})"])
                    )
                    continue
                if not _CMP[rule.dose_op](dose, rule.dose_value):
                    outside = True
                    continue
            if m.ongoing(ctx.as_of):
                if rule.if_ongoing == "review":
                    note = (
                        rule.ongoing_note.format(drug=m.display)
                        if rule.ongoing_note
                        else f"currently taking {m.display}; must stop {rule.within} before enrolment"
                    )
                    review.append(Res(Truth.REVIEW, evidence=[ev], notes=[note]))
                else:
                    hits.append(Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} ongoing"]))
                continue
            last = m.last_use()
            if last is None:
                review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{m.display}: dates of use not recorded"]))
                continue
            if last > ctx.as_of:
                last = ctx.as_of
            if since is None:
                hits.append(Res(Truth.TRUE, evidence=[ev], why=[f"{m.display} on record"]))
            elif last >= since:
                until = rule.within.end_after(last) + timedelta(days=1)  # type: ignore[union-attr]
                note = "" if m.end else " (end date not recorded: the earliest possible date)"
                hits.append(
                    Res(
                        Truth.TRUE,
                        until=until,
                        evidence=[ev],
                        why=[
                            f"{m.display} last used {last.isoformat()}, within {rule.within}; "
                            f"clear from {until.isoformat()}{note}"
                        ],
                    )
                )
            else:
                outside = True
        if hits:
            return Res(Truth.TRUE, _max_until(hits)).merge(hits)
        if unknown:
            return Res(Truth.UNKNOWN).merge(unknown + review)
        if review:
            return Res(Truth.REVIEW).merge(review)
        if outside:
            return Res(
                Truth.FALSE,
                why=[f"no {rule.label} within {rule.within}" if rule.within else f"no qualifying {rule.label}"],
            )
        if ctx.absent == Truth.FALSE:
            return Res(Truth.FALSE, why=[f"no {rule.label} on record"])
        return Res(Truth.UNKNOWN, missing=[f"{rule.label}: none on record"])

    def _treated(self, rule: Treated, ctx: Ctx) -> Res:
        if "Medication" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"medication history not available to check {rule.label}"])
        days: dict[str, int] = {}
        evidence: dict[str, list[Evidence]] = {}
        undated = False
        for m in self._meds(rule.ingredients, ctx):
            if m.start is None:
                undated = True
                continue
            end = min(m.end or ctx.as_of, ctx.as_of) if (m.end or m.ongoing(ctx.as_of)) else m.start
            span = max((end - m.start).days, 0)
            days[m.ingredient] = days.get(m.ingredient, 0) + span
            evidence.setdefault(m.ingredient, []).append(self._med_evidence(m))
        need = (rule.min_duration.end_after(ctx.as_of) - ctx.as_of).days if rule.min_duration else 0
        enough = [i for i, d in days.items() if d >= need]
        if len(enough) >= rule.min_distinct:
            ev = [e for i in enough for e in evidence[i]]
            return Res(
                Truth.TRUE,
                evidence=ev,
                why=[
                    f"{len(enough)} of {rule.label}"
                    + (f" for {rule.min_duration} or longer" if rule.min_duration else "")
                ],
            )
        ev = [e for es in evidence.values() for e in es]
        what = (f"{rule.min_distinct} different {rule.label}" if rule.min_distinct > 1 else rule.label) + (
            f" for at least {rule.min_duration}" if rule.min_duration else ""
        )
        if ctx.absent == Truth.FALSE and not undated:
            return Res(Truth.FALSE, evidence=ev, why=[f"record shows {len(enough)} of {what}"])
        # Medication history is often incomplete (outside prescriptions): never a definite fail here.
        return Res(Truth.UNKNOWN, evidence=ev, missing=[f"treatment history: record shows {len(enough)} of {what}"])

    def _current_dose(self, rule: CurrentDose, ctx: Ctx) -> Res:
        if "Medication" not in ctx.facts.gathered:
            return Res(Truth.UNKNOWN, missing=[f"medication history not available to check {rule.label} dose"])
        total = 0.0
        ev: list[Evidence] = []
        for m in self._meds(rule.ingredients, ctx):
            if not m.ongoing(ctx.as_of):
                continue
            dose = m.pred_eq_mg if m.pred_eq_mg is not None else None
            if dose is None:
                return Res(
                    Truth.UNKNOWN,
                    evidence=[self._med_evidence(m)],
                    missing=[f"daily dose (prednisone-equivalent) of {m.display} ({m.resource})"],
                )
            total += dose
            ev.append(self._med_evidence(m, dose))
        ok = _CMP[rule.op](total, rule.value)
        why = [
            f"current {rule.label} {total:g} mg/d prednisone-equivalent {rule.op} {rule.value:g}: "
            f"{'yes' if ok else 'no'}"
        ]
        if ok:
            return Res(Truth.TRUE, evidence=ev, why=why)
        if not ev and ctx.absent != Truth.FALSE:
            return Res(Truth.UNKNOWN, missing=[f"current {rule.label}: none on record"])
        return Res(Truth.FALSE, evidence=ev, why=why)


def _condition_note(active: bool | None, confirmed: bool, abatement: date | None) -> str:
    parts = [{True: "active", False: "inactive", None: "status not recorded"}[active]]
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
