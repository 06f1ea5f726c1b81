"""The coordinator's worklist: what changed between the store's last two screens, and whose bar lifts soon.

Three lists, per trial:
- `newly-eligible`: likely or possibly eligible after the last run (no bar, or its bar lifted by that
  run's date), and not before it: a new patient in the cohort, a washout that lifted, a new result.
- `bar-lifts-soon`: possibly eligible once a temporary bar (a washout, an age) lifts within N days of
  the last run's date, with the date and the criterion.
- `no-longer-eligible`: eligible after the previous run, not after the last one: ineligible, out of the
  cohort, or under a new bar, with the criterion that changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from cds_service.screening.funnel import COHORT_STEP
from cds_service.worklist.runs import REMOVED, Run, RunStore, StoredRow

LISTS = ("newly-eligible", "bar-lifts-soon", "no-longer-eligible")
CSV_HEADER = ("list", "trial", "patient", "status", "eligible_from", "criterion", "note")
AGED_OUT = "failed before, unknown now: its data is missing or older than its window"


@dataclass(frozen=True)
class Entry:
    list: str
    trial: str
    patient: str
    status: str
    eligible_from: date | None
    criterion: str  # criterion id(s), `cohort entry`, or "" for a patient new to the cohort
    row_id: int  # the stored row, for the patient's checklist
    note: str = ""  # newly-eligible only because the criterion that failed is now unknown (AGED_OUT)

    def csv(self) -> dict[str, str]:
        return {
            "list": self.list,
            "trial": self.trial,
            "patient": self.patient,
            "status": self.status,
            "eligible_from": self.eligible_from.isoformat() if self.eligible_from else "",
            "criterion": self.criterion,
            "note": self.note,
        }


@dataclass(frozen=True)
class Worklist:
    last: Run | None
    previous: Run | None
    within_days: int
    entries: list[Entry]


def _first(ids: str) -> str:
    return ids.split(";")[0] if ids else ""


def _why_in(cur: StoredRow, prev: StoredRow | None) -> tuple[str, str]:
    """What let the patient in: the criterion that failed before (or its bar), else nothing to name; and a note
    when that criterion is now unknown rather than met. Missing data never fails a criterion, so a result
    that aged out of its window (or is gone) lists the patient here too: one whose data must be looked at
    again, not one who became eligible."""
    if prev is None or not prev.failed:
        return "", ""
    unknown_now = set(cur.unknowns.split(";"))
    aged = [c for c in prev.failed.split(";") if c in unknown_now]  # any of them, not only the first
    return (aged[0], AGED_OUT) if aged else (_first(prev.failed), "")


def _why_out(cur: StoredRow) -> str:
    if cur.status == REMOVED:
        return "no longer on record"
    if cur.status == "not-assessed" and not cur.failed:
        return COHORT_STEP
    return _first(cur.failed) or COHORT_STEP


def compare(
    cur: dict[tuple[str, str], StoredRow],
    prev: dict[tuple[str, str], StoredRow],
    last_day: date,
    prev_day: date | None,
    within_days: int,
) -> list[Entry]:
    """The three lists from two states (pure: the store is read by `build`)."""
    out: list[Entry] = []
    soon = last_day + timedelta(days=within_days)
    for (patient, trial), row in sorted(cur.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        before = prev.get((patient, trial))
        was = before is not None and prev_day is not None and before.eligible_on(prev_day)
        now = row.eligible_on(last_day)
        if now and not was:
            criterion, note = _why_in(row, before)
            out.append(Entry("newly-eligible", trial, patient, row.status, row.eligible_from, criterion, row.id, note))
        elif was and not now:
            out.append(Entry("no-longer-eligible", trial, patient, row.status, row.eligible_from, _why_out(row),
                             row.id))  # fmt: skip
        if row.status in ("possibly-eligible",) and row.eligible_from and last_day < row.eligible_from <= soon:
            out.append(Entry("bar-lifts-soon", trial, patient, row.status, row.eligible_from, _first(row.failed),
                             row.id))  # fmt: skip
    return sorted(out, key=lambda e: (LISTS.index(e.list), e.trial, e.eligible_from or last_day, e.patient))


def build(store: RunStore, within_days: int = 30, trials: list[str] | None = None) -> Worklist:
    """The worklist of the store's last run against the one before it (a first run: everyone eligible is new)."""
    runs = store.runs()
    if not runs:
        return Worklist(None, None, within_days, [])
    last = runs[-1]
    previous = runs[-2] if len(runs) > 1 else None
    cur = store.state(last, runs)
    prev = store.state(previous, runs) if previous is not None else {}
    entries = compare(cur, prev, last.as_of, previous.as_of if previous else None, within_days)
    if trials:
        entries = [e for e in entries if e.trial in trials]
    return Worklist(last, previous, within_days, entries)
