"""The eligibility report: the engine's output shape, used as-is by the REST API.

{"patient": "Patient/ID", "as_of": DATE, "trials": [{"id", "title", "status",
 "eligible_from"?, "criteria": [{"id", "type", "text", "outcome", "until"?,
 "evidence": [...], "missing": [...]}]}]}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["pass", "fail", "unknown", "review"]
# not-assessed: the disease the trial studies could not be checked (no condition data could be read)
# draft: the trial file is an import not yet encoded (`draft: true`): never evaluated, never a card
TrialStatus = Literal["likely-eligible", "possibly-eligible", "ineligible", "not-assessed", "draft"]
CohortOutcome = Literal["in", "out", "unknown"]


class Evidence(BaseModel):
    resource: str
    label: str
    value: float | str | None = None
    unit: str | None = None
    original_value: str | None = None
    original_unit: str | None = None
    date: dt.date | None = None
    note: str | None = None


class CriterionResult(BaseModel):
    """A value, never changed once made (frozen, its lists tuples): the engine gives one to the reports of
    every record that holds none of the facts its criterion reads (`Engine._explained`). JSON as before."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: Literal["inclusion", "exclusion"]
    text: str
    outcome: Outcome
    until: dt.date | None = None
    explanation: str | None = None
    evidence: tuple[Evidence, ...] = ()
    missing: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    # a review raised because the record points towards a fail (not a standing review such as consent)
    flagged: bool = False


class Cohort(BaseModel):
    """Cohort entry: whether the patient has the disease the trial studies, with the diagnosis found."""

    outcome: CohortOutcome
    reason: str
    evidence: list[Evidence] = Field(default_factory=list)


class Dismissal(BaseModel):
    """A clinician dismissed this trial's card for this patient (overridden feedback with a reason)."""

    on: dt.date
    until: dt.date
    reason: str | None = None


class TrialResult(BaseModel):
    id: str
    title: str
    status: TrialStatus
    eligible_from: dt.date | None = None
    url: str | None = None
    cohort: Cohort | None = None
    dismissed: Dismissal | None = None  # no card until `until`; /match and the checklist still show it
    criteria: list[CriterionResult]
    notes: list[str] = Field(default_factory=list)  # trial-level: deceased patient, source caveats

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.criteria if c.outcome == outcome)

    @property
    def missing(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.criteria:
            for m in c.missing:
                seen.setdefault(m, None)
        return list(seen)


class CriterionVerdict(NamedTuple):
    """A criterion's outcome without its explanation (Engine.verdict). A tuple: 123 of them a patient, and
    a frozen dataclass sets each field through object.__setattr__."""

    id: str
    outcome: Outcome


@dataclass(slots=True)
class TrialVerdict:
    """What a screen keeps of a trial's result (Engine.verdict): the status and each criterion's outcome,
    decided as in a TrialResult, without the explanations. Read as a TrialResult is by the screen."""

    id: str
    status: TrialStatus
    eligible_from: dt.date | None
    cohort: Cohort | None
    criteria: list[CriterionVerdict]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.criteria if c.outcome == outcome)


class Report(BaseModel):
    patient: str
    as_of: dt.date
    trials: list[TrialResult]
    skipped_resources: list[str] = Field(default_factory=list)
