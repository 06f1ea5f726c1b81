"""Normalize FHIR R4 JSON into patient facts.

One reader, over the JSON as it arrives, checks the type of every element it
reads (a number is a number, a date is a FHIR date, a code a string); a resource
whose read elements do not fit is skipped and reported in `PatientFacts.skipped`,
never fatal. Resources no criterion can use (an Observation whose codes map to no
variable, a Condition in no group) are dropped before any work.

`strict=True` additionally validates each relevant resource in full with
fhir.resources' R4B models (8.x defaults to R5; R4B reads R4 JSON) before
reading it. Both modes give the same facts on valid FHIR (a test holds them to
it); the default reads only what the criteria need, several times faster.

Only results a clinician can rely on count: Observations with status final,
amended or corrected; Conditions not refuted or entered-in-error; medications
not entered-in-error, not-taken or merely intended.
"""

from __future__ import annotations

import calendar
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgspec

from cds_service.fhir.allergies import AllergyReader
from cds_service.fhir.facts import MEDICATION_SOURCES, ConditionFact, PatientFacts, ProcedureFact
from cds_service.fhir.medications import MedicationReader
from cds_service.fhir.negation import says_negation
from cds_service.fhir.observations import ObservationReader
from cds_service.fhir.read import (
    NORMALIZED_TYPES,
    Invalid,
    _b,
    _cc_all_text,
    _cc_text,
    _codings,
    _d,
    _o,
    _s,
    iter_resources,
)

__all__ = ["Invalid", "Normalizer", "SharedMedications", "iter_resources"]


@dataclass(frozen=True)
class SharedMedications:
    """Medication resources no patient owns (a Bulk Data export's Medication file), indexed once for every
    record whose medicationReference points at one (`Normalizer.shared_medications`). Handed to each
    record with its own resources, they cost every patient a pass over all of them: 2,740 a patient in a
    Synthea export of 200, tens of thousands in a health system's."""

    by_ref: dict[str, dict]  # "Medication/ID" -> the resource
    skipped: tuple[str, ...] = ()  # strict mode: those that failed validation, reported with every record


def _last_day(first: date | None, text: str | None) -> date | None:
    """The last day a partial FHIR date can mean: "1960" -> 1960-12-31, "1960-02" -> 1960-02-29; a full date
    is itself. `first` is the date `_d` read (its first possible day)."""
    if first is None or text is None:
        return first
    digits = len(text.split("T")[0])
    if digits == 4:  # YYYY
        return date(first.year, 12, 31)
    if digits == 7:  # YYYY-MM
        return date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    return first


class Normalizer(ObservationReader, MedicationReader, AllergyReader):
    """Turns one patient's FHIR resources into `PatientFacts` using the mappings."""

    # --- entry point ---------------------------------------------------------------------------

    def normalize(
        self,
        resources: Iterable[dict],
        patient_id: str | None = None,
        gathered: Iterable[str] = (),
        shared: SharedMedications | None = None,
    ) -> PatientFacts:
        """`gathered`: the kinds ("Observation", "Condition", "Medication") that were looked
        for completely, so that their absence means "none on record". `shared`: Medication resources
        outside `resources` that its references may name, read as if they followed them."""
        facts = PatientFacts(patient=f"Patient/{patient_id}" if patient_id else "Patient/unknown")
        facts.gathered.update(gathered)
        meds_by_ref: dict[str, dict] = {}
        pending: list[dict] = []
        for res in resources:
            rtype = res.get("resourceType")
            if rtype == "Medication":
                if self._valid(res, facts):
                    meds_by_ref[f"Medication/{res.get('id')}"] = res
            elif rtype in NORMALIZED_TYPES:
                pending.append(res)
        refs: Mapping[str, dict] = meds_by_ref
        if shared is not None:  # as if listed after the record's own: reported after them, and read first
            facts.skipped.extend(shared.skipped)
            refs = ChainMap(shared.by_ref, meds_by_ref) if meds_by_ref else shared.by_ref
        for res in pending:
            rtype = res["resourceType"]
            try:
                if rtype == "Observation":
                    self._observation(res, facts)
                elif rtype == "Patient":
                    self._patient(res, patient_id, facts)
                elif rtype == "Condition":
                    self._condition(res, facts)
                elif rtype in MEDICATION_SOURCES:
                    self._medication(res, rtype, facts, refs)
                elif rtype == "Immunization":
                    self._immunization(res, facts)
                elif rtype == "Procedure":
                    self._procedure(res, facts)
                elif rtype == "AllergyIntolerance":
                    self._allergy(res, facts)
            except Invalid:
                facts.skipped.append(f"{rtype}/{res.get('id', '?')} failed FHIR R4 validation")
                # it may hold the very fact a criterion asks for (an SLE Condition whose onset is not a date):
                # its source can no longer say "none on record" (a cohort entry `unknown`, never `out`)
                facts.unread[rtype] = facts.unread.get(rtype, 0) + 1
        for key, var in self.m.variables.items():
            for other in var.also_from:
                for r in facts.labs.get(other, ()):
                    facts.add_lab(msgspec.structs.replace(r, variable=key))
        facts.sort()
        return facts

    def shared_medications(self, resources: Iterable[dict]) -> SharedMedications:
        """The Medication resources among `resources`, indexed once for `normalize(shared=...)`, which then
        reads each record as it reads that record followed by these."""
        seen = PatientFacts(patient="Patient/unknown")  # collects what strict mode sets aside
        by_ref = {f"Medication/{r.get('id')}": r for r in resources
                  if r.get("resourceType") == "Medication" and self._valid(r, seen)}  # fmt: skip
        return SharedMedications(by_ref, tuple(seen.skipped))

    def _patient(self, res: dict, patient_id: str | None, facts: PatientFacts) -> None:
        rid = _s(res.get("id"))
        if patient_id is not None and rid != patient_id:
            return  # another patient's record (Catalog refuses mixed data when no id is given)
        birth, gender = _d(res.get("birthDate")), _s(res.get("gender"))
        if gender not in (None, "male", "female", "other", "unknown"):
            raise Invalid("gender")
        if not self._valid(res, facts):
            return
        facts.patient = f"Patient/{rid}"
        facts.birth_date, facts.gender = birth, gender
        facts.birth_latest = _last_day(birth, _s(res.get("birthDate")))
        died = _d(res.get("deceasedDateTime"))
        facts.deceased = died is not None or _b(res.get("deceasedBoolean")) is True
        facts.deceased_date = died

    # --- Condition and Procedure ------------------------------------------------------------------

    def _condition(self, cond: dict, facts: PatientFacts) -> None:
        vs = {c for _, c, _ in _codings(cond.get("verificationStatus"))}
        if vs & {"refuted", "entered-in-error"}:
            return  # never a fact, and not a record left unread either
        code = _o(cond.get("code"))
        groups: set[str] = set()
        history = False
        codings = _codings(code)
        for system, c, _ in codings:
            hits = self.m.condition_groups(system, c)
            groups |= hits
            history = history or bool(hits and self.m.is_history_code(system, c))
        text = _cc_all_text(code)
        # its own words, read before its codes (negation first): "r/o SLE" coded as SLE is no diagnosis of SLE
        said = self.m.condition_text_reading(_s(code.get("text")) or "")
        denied = {g for g in groups if said.get(g) == "denied"}
        groups -= denied
        if not groups and not denied and text:  # no code the maps know: its words (and codings' displays)
            said = self.m.condition_text_reading(text)
            groups |= self.m.condition_groups_from_text(text)
        doubtful = self._doubted(groups, said, _s(code.get("text")) or "")
        if not groups:
            # No code in a system the maps are written in, and no text they understand: what this records
            # is unknown ("Breast cancer" as text only), so no condition can be said to be absent.
            known = any(self.m.knows_condition_system(system) for system, _, _ in codings)
            if not known and not (text and self.m.text_names_a_group(text)):
                facts.unread["Condition"] = facts.unread.get("Condition", 0) + 1
            return
        if not self._valid(cond, facts):
            return
        cs = {c for _, c, _ in _codings(cond.get("clinicalStatus"))}
        active: bool | None
        if cs & {"active", "recurrence", "relapse"}:
            active = True
        elif cs & {"inactive", "remission", "resolved"}:
            active = False
        else:
            active = None
        ab_period, on_period = _o(cond.get("abatementPeriod")), _o(cond.get("onsetPeriod"))
        abatement = _d(cond.get("abatementDateTime")) or _d(ab_period.get("end")) or _d(ab_period.get("start"))
        if active is None and abatement is not None:
            active = False
        facts.conditions.append(
            ConditionFact(
                groups=frozenset(groups),
                resource=f"Condition/{_s(cond.get('id'))}",
                display=_cc_text(code) or "condition",
                active=active,
                # the text's doubt outranks a `confirmed` status, which many EHRs set on every entry by default
                confirmed=not (doubtful or vs & {"provisional", "differential", "unconfirmed"}),
                onset=_d(cond.get("onsetDateTime")) or _d(on_period.get("start")),
                abatement=abatement,
                recorded=_d(cond.get("recordedDate")),
                history=history,
                categories=_categories(cond.get("category")),
            )
        )

    def _doubted(self, groups: set[str], said: Mapping[str, str], own: str) -> bool:
        """A coded diagnosis its own text casts doubt on, as verificationStatus `provisional` would: "suspected
        SLE", "SLE vs RA", "SLE-like", "SLE (biopsy 2019) ruled out" (`diagnosis_reading`); and, for a group
        with no words to read the text by, any negation in it ("Pregnancy ruled out"): a person reads it,
        where it used to be a definite diagnosis. A plain mention of a group keeps it."""
        if any(said.get(g) == "present" for g in groups):
            return False
        if any(said.get(g) in ("doubtful", "contested") for g in groups):
            return True
        wordless = any(not self.m.conditions.groups[g].words for g in groups)
        return wordless and says_negation(" ".join(own.lower().split()))

    def _procedure(self, proc: dict, facts: PatientFacts) -> None:
        status = _s(proc.get("status")) or "unknown"
        if status in ("entered-in-error", "not-done", "preparation"):
            return
        code = _o(proc.get("code"))
        # the codings as a tuple: the maps keep the groups of each concept they have read (Mappings._memoised)
        groups = self.m.procedure_groups(tuple((system, c) for system, c, _ in _codings(code)), _cc_all_text(code))
        if not groups or not self._valid(proc, facts):
            return
        period = _o(proc.get("performedPeriod"))
        when = _d(proc.get("performedDateTime")) or _d(period.get("end")) or _d(period.get("start"))
        facts.procedures.append(
            ProcedureFact(
                groups=groups,
                resource=f"Procedure/{_s(proc.get('id'))}",
                display=_cc_text(code) or "procedure",
                status=status,
                when=when,
            )
        )


UNCODED = "?"  # a Condition.category concept with neither a code nor a text: it says something, nothing readable


def _categories(value: Any) -> frozenset[str]:
    """Condition.category as the codes of each concept, folded ("Problem-List-Item" is problem-list-item);
    a concept with no code as its text or its codings' displays so folded ("Problem List Item", "Family
    history"), or UNCODED. A concept the service cannot read must not read as no category, which counts as
    a diagnosis."""
    out = set()
    for cc in value if isinstance(value, list) else [value]:
        if cc is None:
            continue
        codings = _codings(cc)
        codes = {_fold(c) for _, c, _ in codings if c}
        words = [_s(_o(cc).get("text")) or "", *(d or "" for _, _, d in codings)]
        out |= codes or {_fold(w) for w in words if w.strip()} or {UNCODED}
    return frozenset(out)


def _fold(code: str) -> str:
    return "-".join(code.strip().lower().replace("_", " ").split())
