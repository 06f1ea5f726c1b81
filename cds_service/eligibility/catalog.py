"""The loaded, compiled catalogue: mappings + trials + the objects built on them.

Loaded once at start-up (trials are precompiled, code lookups indexed) and
shared read-only by every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds_service.authoring.lint import Problem, load_checked
from cds_service.eligibility.cohort import entry
from cds_service.eligibility.engine import Engine
from cds_service.eligibility.logic import Memo
from cds_service.eligibility.report import Report, TrialResult, TrialVerdict
from cds_service.eligibility.trials import Trial
from cds_service.fhir.facts import ENTRY_TYPES, SOURCES, EntryCheck, PatientFacts
from cds_service.fhir.mappings import Mappings, load_mappings
from cds_service.fhir.normalize import Normalizer, SharedMedications, iter_resources
from cds_service.fhir.subjects import UNRESOLVED, patients_named

if TYPE_CHECKING:  # the gatherer imports httpx, which a screen never needs
    from cds_service.fhir.gather import Gathered


class MixedPatients(ValueError):
    """More than one patient in data that must be one patient's."""


@dataclass(frozen=True)
class Catalog:
    mappings: Mappings
    trials: dict[str, Trial]
    engine: Engine
    normalizer: Normalizer
    problems: tuple[Problem, ...] = ()  # trial files left out, with what to fix (see `trial-matcher lint`)
    # the mappings and trials folders it was loaded from (None: built otherwise), so that a process that
    # cannot be handed this catalogue (a spawned screen worker) loads the same one
    source: tuple[str, str] | None = None

    @classmethod
    def load(
        cls, mappings_dir: str | Path, trials_dir: str | Path, strict: bool = False, horizon_days: int = 365
    ) -> Catalog:
        mappings = load_mappings(mappings_dir)
        engine = Engine(mappings, horizon_days)
        trials, problems = load_checked(Path(trials_dir), mappings)
        source = (str(Path(mappings_dir).resolve()), str(Path(trials_dir).resolve()))
        return cls(mappings, trials, engine, Normalizer(mappings, strict), tuple(problems), source)

    def facts(
        self,
        data: Any,
        patient_id: str | None = None,
        gathered: set[str] | None = None,
        shared: SharedMedications | None = None,
    ) -> PatientFacts:
        """Facts from a resource, a Bundle, or a list of them.

        `gathered` names the resource types read completely (see `facts.SOURCES`): their
        absence then means "none on record". By default a Bundle of one patient's record
        counts as complete for every source. `shared`: Medication resources no patient owns
        that the record's references may name (a screen's, indexed once: Normalizer.shared_medications).
        """
        kinds = set(SOURCES) if gathered is None else gathered
        resources = list(iter_resources(data))
        if patient_id is None:
            ids = {r.get("id") for r in resources if r.get("resourceType") == "Patient"}
            if len(ids) > 1:
                # Their results would be mixed into one evaluation: refuse rather than guess.
                raise MixedPatients(f"the data hold {len(ids)} different Patient resources; send one patient's")
            named = {pid for r in resources for pid in patients_named(r)} - {UNRESOLVED}
            if len(named) > 1:  # one Patient, but records (subject, patient, performer...) of another
                raise MixedPatients(
                    f"the data's resources refer to {len(named)} different patients; send one patient's"
                )
        return self.normalizer.normalize(resources, patient_id, kinds, shared)

    def chosen(self, trial_ids: list[str] | None = None) -> list[Trial]:
        """The trials named, in that order, or every trial."""
        return [self.trials[t] for t in trial_ids] if trial_ids else list(self.trials.values())

    def live(self, trial_ids: list[str] | None = None) -> list[Trial]:
        """The chosen trials that are evaluated (a draft's entry is never read)."""
        return [t for t in self.chosen(trial_ids) if not t.draft]

    def opens_some_entry(self, facts: PatientFacts, live: list[Trial]) -> bool:
        """True when these facts put the patient inside, or possibly inside, one of `live`'s cohorts."""
        return any(entry(t, facts, self.mappings).outcome != "out" for t in live)

    def outside_facts(
        self, resources: Any, patient_id: str, gathered: set[str] | None = None, trial_ids: list[str] | None = None
    ) -> PatientFacts | None:
        """The facts of the record's Patient and Conditions alone, when they keep the patient outside every
        chosen trial's cohort; None when some entry opens, or may (`unknown`): then read the whole record.

        Most charts opened and most of an export's patients do not have the disease any trial studies. For
        them the entry, which reads only Conditions, is the whole answer: every trial `ineligible` at its
        entry, no criterion read, no card. So their Observations and medications are never normalised, and the
        results are those of the whole record's: its entries are decided from these same Conditions."""
        entry_only = [r for r in iter_resources(resources) if r.get("resourceType") in ENTRY_TYPES]
        quick = self.facts(entry_only, patient_id, gathered)
        return None if self.opens_some_entry(quick, self.live(trial_ids)) else quick

    def cohort_first_facts(
        self,
        resources: Any,
        patient_id: str,
        gathered: set[str] | None = None,
        trial_ids: list[str] | None = None,
        shared: SharedMedications | None = None,
    ) -> PatientFacts:
        """`outside_facts` for a patient outside every chosen cohort, else the whole record's facts: what the
        hooks, the screen and the worklist's re-read evaluate."""
        quick = self.outside_facts(resources, patient_id, gathered, trial_ids)
        return quick if quick is not None else self.facts(resources, patient_id, gathered, shared)

    def gathered_facts(self, got: Gathered, patient_id: str) -> PatientFacts:
        """The facts of a record `Gatherer.gather` read: an outside patient's as its `entry_check` found them (the
        rest of the record was never read), else the whole record's."""
        return got.outside if got.outside is not None else self.facts(got.resources, patient_id, got.complete)

    def entry_check(self, patient_id: str, trial_ids: list[str] | None = None) -> EntryCheck:
        """For `Gatherer.gather`: given a record's Patient and Conditions and the types read completely, their
        facts when they keep the patient outside every chosen cohort (`outside_facts`); None when some cohort
        opens, or may, and the rest of the record is to be read."""
        return lambda entry, complete: self.outside_facts(entry, patient_id, complete, trial_ids)

    def report(self, facts: PatientFacts, as_of: date, trial_ids: list[str] | None = None) -> Report:
        chosen = self.chosen(trial_ids)
        memo = Memo(facts, as_of, engine=self.engine)  # what every trial asks of this record on this date, once
        return Report(
            patient=facts.patient,
            as_of=as_of,
            trials=[draft_result(t) if t.draft else self.engine.evaluate(facts, t, as_of, memo) for t in chosen],
            skipped_resources=facts.skipped,
        )

    def verdicts(
        self, facts: PatientFacts, as_of: date, trial_ids: list[str] | None = None
    ) -> list[TrialVerdict | TrialResult]:
        """What `report` decides, without the explanations (Engine.verdict), for a screen; a draft trial's
        result as in the report."""
        memo, verdict = Memo(facts, as_of, engine=self.engine), self.engine.verdict
        return [draft_result(t) if t.draft else verdict(facts, t, as_of, memo) for t in self.chosen(trial_ids)]


DRAFT_NOTE = "draft, not yet encoded: its criteria are not evaluated for any patient"


def draft_result(trial: Trial) -> TrialResult:
    """A draft trial (imported, not yet encoded) is never evaluated: whatever its criteria would say, no card,
    no screen verdict, no order warning; only this status, so /match and the CLI show it exists."""
    return TrialResult(id=trial.id, title=trial.title, status="draft", url=trial.url, criteria=[], notes=[DRAFT_NOTE])
