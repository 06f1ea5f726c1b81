"""What a screen keeps of each patient and trial: a row, and the trial's funnel counts.

The funnel starts at the cohort entry (patients with the disease the trial studies), then counts, per
criterion in the trial's order, the patients it removed (their first definite fail) and those still in
with it unknown. Rows and counts are made in the workers and merged in the screen process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds_service.eligibility.report import TrialResult, TrialVerdict

ROW_FIELDS = (
    "patient", "trial", "status", "eligible_from", "pass", "fail", "unknown", "review", "failed", "unknowns",
)  # fmt: skip
COHORT_STEP = "cohort entry"  # the funnel's first step: patients with the disease the trial studies


@dataclass
class Funnel:
    """Per trial: criterion ids in the trial's order; per criterion, patients removed (first definite fail)
    and patients still in with the criterion unknown."""

    order: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, dict[str, int]] = field(default_factory=dict)
    unknown: dict[str, dict[str, int]] = field(default_factory=dict)
    screened: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)  # per trial: patients per status

    def add(self, result: TrialResult | TrialVerdict, patients: int = 1) -> None:
        """The cohort entry is the first step (its fails are patients without the disease, its unknowns
        patients whose conditions could not be read); criteria are counted within the cohort only.
        `patients`: how many patients had this same result."""
        t, n = result.id, patients
        failed, unknown = self.failed.setdefault(t, {}), self.unknown.setdefault(t, {})
        self.screened[t] = self.screened.get(t, 0) + n
        statuses = self.statuses.setdefault(t, {})
        statuses[result.status] = statuses.get(result.status, 0) + n
        self.order.setdefault(t, [COHORT_STEP])
        entry = result.cohort.outcome if result.cohort is not None else "in"
        if entry != "in":
            bucket = failed if entry == "out" else unknown
            bucket[COHORT_STEP] = bucket.get(COHORT_STEP, 0) + n
            return
        if len(self.order.get(t, ())) <= 1:
            self.order[t] = [COHORT_STEP, *(c.id for c in result.criteria)]
        for c in result.criteria:
            if c.outcome == "fail":
                failed[c.id] = failed.get(c.id, 0) + n
                break  # out of the cohort here: later criteria do not count against them
            if c.outcome == "unknown":
                unknown[c.id] = unknown.get(c.id, 0) + n

    def merge(self, other: Funnel) -> None:
        for t in other.screened:
            if len(other.order.get(t, ())) > len(self.order.get(t, ())):
                self.order[t] = other.order[t]
            self.screened[t] = self.screened.get(t, 0) + other.screened.get(t, 0)
            pairs = ((self.failed, other.failed), (self.unknown, other.unknown), (self.statuses, other.statuses))
            for mine, theirs in pairs:
                bucket = mine.setdefault(t, {})
                for cid, n in theirs.get(t, {}).items():
                    bucket[cid] = bucket.get(cid, 0) + n


def row(pid: str, r: TrialResult | TrialVerdict) -> dict[str, Any]:
    entry = r.cohort.outcome if r.cohort is not None else "in"
    return {
        "patient": pid,
        "trial": r.id,
        "status": r.status,
        "eligible_from": r.eligible_from.isoformat() if r.eligible_from else "",
        "pass": r.count("pass"),
        "fail": r.count("fail"),
        "unknown": r.count("unknown"),
        "review": r.count("review"),
        "failed": COHORT_STEP if entry == "out" else ";".join(c.id for c in r.criteria if c.outcome == "fail"),
        "unknowns": COHORT_STEP if entry == "unknown" else ";".join(c.id for c in r.criteria if c.outcome == "unknown"),
        # every criterion's outcome, for the worklist's checklist of a stored screen (not a patients.csv column)
        "outcomes": ";".join(f"{c.id}={c.outcome}" for c in r.criteria),
    }
