"""Cohort entry: does the patient have the disease the trial studies?

Read before any criterion. "Missing data is never a failed criterion" holds for the criteria of a
trial, not for the question whether the patient belongs to its population: a trial speaks only about
patients with its disease on record. So the entry has three answers:

- `in`: a Condition in one of the entry's groups is on record: any verification status but refuted
  or entered-in-error (those never become facts), as a problem-list item, an encounter diagnosis or
  with no category; for a lifelong disease (SLE) whatever its clinical status, and as a past medical
  history too; otherwise not resolved.
- `out`: the problem list was read in full and holds no such diagnosis: `ineligible`, no card.
- `unknown`: no condition data could be read, or some Condition could not be interpreted at all, or the
  diagnosis is recorded only under a category this service does not know (a site's own, a reason for
  visit), so "not on record" cannot be said: `not-assessed`, and no card either (no card without the
  disease).
"""

from __future__ import annotations

from cds_service.eligibility.conditions import category_reading, condition_note, is_lifelong
from cds_service.eligibility.report import Cohort, Evidence
from cds_service.eligibility.trials import Trial
from cds_service.fhir.facts import ConditionFact, PatientFacts
from cds_service.fhir.mappings import Mappings


def disease(trial: Trial, m: Mappings) -> str:
    """The entry's diseases in words: "systemic lupus erythematosus or lupus nephritis"."""
    labels = [m.conditions.groups[g].label for g in trial.entry.groups]
    return " or ".join(x[:1].lower() + x[1:] for x in labels)


def _hit(c: ConditionFact, trial: Trial, m: Mappings) -> tuple[bool, bool]:
    """(the Condition is in one of the entry's groups, one of those groups is lifelong)."""
    hit = c.groups & trial.entry_groups
    return bool(hit), is_lifelong(hit, m)


def _counts(c: ConditionFact, trial: Trial, m: Mappings) -> bool:
    hit, lifelong = _hit(c, trial, m)
    if not hit or category_reading(c, lifelong) != "diagnosis":
        return False
    return lifelong or c.active is not False


def _unread_category(facts: PatientFacts, trial: Trial, m: Mappings) -> list[ConditionFact]:
    """The Conditions of the entry's groups that would count but for categories this service cannot read."""
    out = []
    for c in facts.conditions:
        hit, lifelong = _hit(c, trial, m)
        if hit and (lifelong or c.active is not False) and category_reading(c, lifelong) == "unknown":
            out.append(c)
    return out


def _evidence(found: list[ConditionFact]) -> list[Evidence]:
    return [
        Evidence(
            resource=c.resource,
            label=c.display,
            date=c.onset or c.recorded,
            note=condition_note(c.active, c.confirmed, c.abatement, c.history),
        )
        for c in found
    ]


def entry(trial: Trial, facts: PatientFacts, m: Mappings) -> Cohort:
    found = [c for c in facts.conditions if _counts(c, trial, m)]
    if found:
        return Cohort(outcome="in", reason=f"{found[0].display} on record", evidence=_evidence(found))
    name = disease(trial, m)
    if "Condition" not in facts.gathered:
        return Cohort(
            outcome="unknown", reason=f"no condition data could be read, so a diagnosis of {name} could not be checked"
        )
    unsure = _unread_category(facts, trial, m)
    if unsure:  # the category's own code is the record's: not quoted; the Conditions to check are listed
        return Cohort(
            outcome="unknown",
            reason=f"a diagnosis of {name} is recorded only under a category this service does not read as a "
            "diagnosis: a person checks whether it is one",
            evidence=_evidence(unsure),
        )
    unread = facts.unread.get("Condition", 0)
    if unread:
        what = "condition" if unread == 1 else "conditions"
        return Cohort(
            outcome="unknown",
            reason=f"{unread} {what} could not be read (not valid FHIR, or no code or text this service knows), "
            f"so a diagnosis of {name} could not be ruled out",
        )
    return Cohort(outcome="out", reason=f"no diagnosis of {name} on record")
