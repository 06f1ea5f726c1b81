"""Cohort entry: does the patient have the disease the trial studies?

Read before any criterion. "Missing data is never a failed criterion" holds for the criteria of a
trial, not for the question whether the patient belongs to its population: a trial speaks only about
patients with its disease on record. So the entry has three answers:

- `in`: a Condition in one of the entry's groups is on record: any verification status but refuted
  or entered-in-error (those never become facts), as a problem-list item, an encounter diagnosis or
  with no category; for a lifelong disease (SLE) whatever its clinical status and under any category
  but a health concern alone (a past medical history, a site's own category), otherwise not resolved.
- `out`: the problem list was read in full and holds no such diagnosis: `ineligible`, no card.
- `unknown`: no condition data could be read, or some Condition could not be interpreted at all, so
  "not on record" cannot be said: `not-assessed`, and no card either (no card without the disease).
"""

from __future__ import annotations

from cds_service.eligibility.conditions import condition_note
from cds_service.eligibility.report import Cohort, Evidence
from cds_service.eligibility.trials import Trial
from cds_service.fhir.facts import ConditionFact, PatientFacts
from cds_service.fhir.mappings import Mappings

# Condition.category codes that record a diagnosis (US Core / FHIR condition-category); a record whose
# only category is e.g. a patient's health concern is not a diagnosis.
DIAGNOSIS_CATEGORIES = frozenset({"problem-list-item", "encounter-diagnosis"})
# categories that do not record a diagnosis made (US Core: concerns of the patient or others, beyond the
# problem list). Any other category of a lifelong disease's code still records the patient's disease: SLE
# under a past medical history ("medical-history") or a site's own category is SLE on record, and read as
# not a diagnosis it left a real SLE patient outside every trial.
NOT_A_DIAGNOSIS = frozenset({"health-concern"})


def disease(trial: Trial, m: Mappings) -> str:
    """The entry's diseases in words: "systemic lupus erythematosus or lupus nephritis"."""
    labels = [m.conditions.groups[g].label for g in trial.entry.groups]
    return " or ".join(x[:1].lower() + x[1:] for x in labels)


def _counts(c: ConditionFact, trial: Trial, m: Mappings) -> bool:
    hit = c.groups & trial.entry_groups
    if not hit:
        return False
    lifelong = any(m.conditions.groups[g].lifelong for g in hit)
    diagnosis = not c.categories or bool(c.categories & DIAGNOSIS_CATEGORIES)
    if not diagnosis and (not lifelong or c.categories <= NOT_A_DIAGNOSIS):
        return False
    return lifelong or c.active is not False


def entry(trial: Trial, facts: PatientFacts, m: Mappings) -> Cohort:
    found = [c for c in facts.conditions if _counts(c, trial, m)]
    if found:
        evidence = [
            Evidence(
                resource=c.resource,
                label=c.display,
                date=c.onset or c.recorded,
                note=condition_note(c.active, c.confirmed, c.abatement, c.history),
            )
            for c in found
        ]
        return Cohort(outcome="in", reason=f"{found[0].display} on record", evidence=evidence)
    name = disease(trial, m)
    if "Condition" not in facts.gathered:
        return Cohort(
            outcome="unknown", reason=f"no condition data could be read, so a diagnosis of {name} could not be checked"
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
