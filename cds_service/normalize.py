"""Normalize FHIR R4 resources into patient facts.

FHIR R4 JSON is parsed with fhir.resources' R4B models (8.x defaults to R5; R4B
is wire-compatible with R4 for the resources read here). A resource that fails
validation is skipped and reported in `PatientFacts.skipped`, never fatal.

Only results a clinician can rely on count: Observations with status final,
amended or corrected; Conditions not refuted or entered-in-error; medications
not entered-in-error, not-taken or merely intended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from .codes import UCUM
from .facts import ConditionFact, LabResult, MedicationFact, PatientFacts
from .mappings import Mappings, Variable

COUNTING_OBSERVATION_STATUS = {"final", "amended", "corrected"}
_TITER = re.compile(r"^\s*1\s*:\s*(\d+(?:\.\d+)?)\s*$")
_MODELS = {
    "Patient": Patient,
    "Observation": Observation,
    "Condition": Condition,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "Immunization": Immunization,
    "Medication": Medication,
}


def _to_date(v: Any) -> date | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    try:
        s = str(v)
        if len(s) == 4:
            return date(int(s), 1, 1)
        if len(s) == 7:
            return date(int(s[:4]), int(s[5:7]), 1)
        return date.fromisoformat(s[:10])
    except ValueError:
        return None


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _codings(cc: Any) -> list[Any]:
    return list(cc.coding or []) if cc is not None else []


def _cc_text(cc: Any) -> str:
    """The concept's text, else its first coding display."""
    if cc is None:
        return ""
    if cc.text:
        return cc.text
    return next((c.display for c in cc.coding or [] if c.display), "")


def _cc_all_text(cc: Any) -> str:
    """Text and every display, for name matching."""
    if cc is None:
        return ""
    return " ".join(p for p in [cc.text or ""] + [c.display or "" for c in cc.coding or []] if p)


def iter_resources(data: Any) -> Iterable[dict]:
    """Yield resources from a resource, a Bundle (any type), or a list of either."""
    if isinstance(data, list):
        for item in data:
            yield from iter_resources(item)
    elif isinstance(data, dict):
        if data.get("resourceType") == "Bundle":
            for entry in data.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    yield from iter_resources(res)
        elif "resourceType" in data:
            yield data


class Normalizer:
    """Turns one patient's FHIR resources into `PatientFacts` using the mappings."""

    def __init__(self, mappings: Mappings) -> None:
        self.m = mappings

    # --- entry point --------------------------------------------------------------------------

    def normalize(
        self,
        resources: Iterable[dict],
        patient_id: str | None = None,
        gathered: Iterable[str] = (),
    ) -> PatientFacts:
        """`gathered`: the kinds ("Observation", "Condition", "Medication") that were looked
        for completely, so that their absence means "none on record"."""
        raw = list(resources)
        facts = PatientFacts(patient=f"Patient/{patient_id}" if patient_id else "Patient/unknown")
        facts.gathered.update(gathered)
        meds_by_ref: dict[str, Medication] = {}
        parsed: list[tuple[str, Any]] = []
        for res in raw:
            rtype = res.get("resourceType")
            model = _MODELS.get(rtype) if isinstance(rtype, str) else None
            if model is None:
                continue
            ref = f"{rtype}/{res.get('id', '?')}"
            try:
                obj = model.model_validate(res)
            except (ValidationError, ValueError, TypeError):
                facts.skipped.append(f"{ref} failed FHIR R4 validation")
                continue
            if rtype == "Medication":
                meds_by_ref[ref] = obj
                continue
            parsed.append((rtype, obj))

        for rtype, obj in parsed:
            if rtype == "Patient":
                if patient_id is None or obj.id == patient_id or facts.patient == "Patient/unknown":
                    facts.patient = f"Patient/{obj.id}"
                    facts.birth_date = _to_date(obj.birthDate)
                    facts.gender = obj.gender
            elif rtype == "Observation":
                self._observation(obj, facts)
            elif rtype == "Condition":
                self._condition(obj, facts)
            elif rtype in ("MedicationStatement", "MedicationRequest"):
                self._medication(obj, rtype, facts, meds_by_ref)
            elif rtype == "Immunization":
                self._immunization(obj, facts)
        facts.sort()
        return facts

    # --- Observation ---------------------------------------------------------------------------

    def _variable_for(self, cc: Any) -> Variable | None:
        for c in _codings(cc):
            key = self.m.obs_index.get((c.system or "", c.code or ""))
            if key:
                return self.m.variables[key]
        return None

    def _observation(self, obs: Observation, facts: PatientFacts) -> None:
        if obs.status not in COUNTING_OBSERVATION_STATUS:
            return
        when = _to_date(
            obs.effectiveDateTime
            or (obs.effectivePeriod.end or obs.effectivePeriod.start if obs.effectivePeriod else None)
            or obs.effectiveInstant
            or obs.issued
        )
        ref = f"Observation/{obs.id}"
        var = self._variable_for(obs.code)
        if var is not None:
            facts.add_lab(self._reading(var, obs, when, ref))
        for comp in obs.component or []:
            cvar = self._variable_for(comp.code)
            if cvar is not None:
                facts.add_lab(self._reading(cvar, comp, when, ref, parent=obs))

    def _reading(self, var: Variable, src: Any, when: date | None, ref: str, parent: Any = None) -> LabResult:
        """Read one value (of an Observation or a component) as `var` in its canonical unit."""
        interp = _codings((src.interpretation or [None])[0]) if getattr(src, "interpretation", None) else []
        ranges = src.referenceRange or (parent.referenceRange if parent is not None and var.kind != "grade" else None)
        value: float | None = None
        orig_value: str | None = None
        orig_unit: str | None = None
        problem: str | None = None
        positive: bool | None = None
        answer: str | None = None
        comparator: str | None = None

        q = src.valueQuantity
        if q is not None and q.value is not None:
            orig_value = _fmt(q.value)
            orig_unit = q.code if (q.system == UCUM and q.code) else (q.unit or q.code)
            comparator = q.comparator
            if comparator in ("<", "<="):
                # "<20 IU/mL": below the reporting limit, i.e. not detected
                positive = False
            if var.kind == "titer" and (orig_unit in (None, "", "{titer}", "titer")):
                value = float(q.value)
            else:
                factor = var.factor(orig_unit)
                if factor is None:
                    problem = f"unit '{orig_unit or 'none'}' is not an accepted unit for {var.label}"
                else:
                    value = float(q.value) * factor
        elif src.valueInteger is not None:
            orig_value = str(src.valueInteger)
            value = float(src.valueInteger) if var.kind in ("quantity", "titer") else None
            if var.kind == "grade":
                answer = orig_value
        elif src.valueRatio is not None and src.valueRatio.denominator is not None:
            num = src.valueRatio.numerator.value if src.valueRatio.numerator else None
            den = src.valueRatio.denominator.value
            if num is not None and den is not None:
                orig_value = f"{_fmt(num)}:{_fmt(den)}"
                if var.kind == "titer" and float(num) == 1:
                    value = float(den)
                elif float(den) != 0 and var.kind == "quantity" and var.factor("") is not None:
                    value = float(num) / float(den)
        elif src.valueString is not None:
            s = src.valueString.strip()
            orig_value = s
            m = _TITER.match(s)
            if m and var.kind == "titer":
                value = float(m.group(1))
            elif var.kind in ("grade", "coded"):
                answer = var.answers.get(s, s.upper() if var.kind == "grade" else s)
            else:
                positive = self._word_reading(s)
        elif src.valueCodeableConcept is not None:
            cc = src.valueCodeableConcept
            orig_value = _cc_text(cc) or None
            for c in _codings(cc):
                if var.kind in ("grade", "coded"):
                    code = c.code or ""
                    if code in var.answers:
                        answer = var.answers[code]
                        break
                    if var.kind == "grade" and code.upper() in "ABCDE" and len(code) == 1:
                        answer = code.upper()
                        break
                key = (c.system or "", c.code or "")
                if key in self.m.positive_codes:
                    positive = True
                    break
                if key in self.m.negative_codes:
                    positive = False
                    break
            if answer is None and positive is None and cc.text:
                if var.kind == "grade" and cc.text.strip().upper() in list("ABCDE"):
                    answer = cc.text.strip().upper()
                else:
                    positive = self._word_reading(cc.text)
        elif src.valueBoolean is not None:
            orig_value = str(src.valueBoolean).lower()
            positive = bool(src.valueBoolean)

        # Interpretation codes (POS/NEG/H/L/N/DET/ND) decide a qualitative reading the value left open.
        if positive is None:
            for c in interp:
                key = (c.system or "", c.code or "")
                if key in self.m.positive_codes:
                    positive = True
                    break
                if key in self.m.negative_codes:
                    positive = False
                    break

        uln, uln_source = self._limit(var, ranges, "high", orig_unit)
        lln, lln_source = self._limit(var, ranges, "low", orig_unit)

        if positive is None and value is not None:
            if var.positive_above is not None:
                positive = value > var.positive_above
            elif uln_source == "reference range":
                positive = value > uln  # type: ignore[operator]

        return LabResult(
            variable=var.key,
            when=when,
            resource=ref,
            value=value,
            unit=var.unit if value is not None else None,
            original_value=orig_value,
            original_unit=orig_unit,
            positive=positive,
            answer=answer,
            uln=uln,
            uln_source=uln_source,
            lln=lln,
            lln_source=lln_source,
            comparator=comparator,
            problem=problem,
        )

    @staticmethod
    def _limit(var: Variable, ranges: Any, side: str, value_unit: str | None) -> tuple[float | None, str | None]:
        """Upper/lower limit of normal in the canonical unit: the lab's own range, else the default."""
        for rr in ranges or []:
            q = getattr(rr, side)
            if q is not None and q.value is not None:
                unit = q.code if (q.system == UCUM and q.code) else (q.unit or q.code)
                if var.unit is None and unit is not None and unit != value_unit:
                    break  # assay-specific units: only a range in the value's own unit is comparable
                # a range without a unit is read in the unit of the value it sits beside
                f = var.factor(unit if unit is not None else value_unit)
                if f is not None:
                    return float(q.value) * f, "reference range"
                break
        default = var.uln_default if side == "high" else var.lln_default
        return (default, "default") if default is not None else (None, None)

    def _word_reading(self, text: str) -> bool | None:
        t = text.strip().lower()
        if t in self.m.negative_words or any(t.startswith(w + " ") for w in self.m.negative_words if " " in w):
            return False
        if t in self.m.positive_words:
            return True
        for w in sorted(self.m.negative_words, key=len, reverse=True):
            if len(w) > 2 and w in t:
                return False
        for w in sorted(self.m.positive_words, key=len, reverse=True):
            if len(w) > 2 and w in t:
                return True
        return None

    # --- Condition ---------------------------------------------------------------------------

    def _condition(self, cond: Condition, facts: PatientFacts) -> None:
        vs = {c.code for c in _codings(cond.verificationStatus)}
        if vs & {"refuted", "entered-in-error"}:
            return
        groups: set[str] = set()
        for c in _codings(cond.code):
            groups |= self.m.condition_groups(c.system or "", c.code or "")
        if not groups and cond.code is not None and cond.code.text:
            groups |= self.m.condition_groups_from_text(cond.code.text)
        if not groups:
            return
        cs = {c.code for c in _codings(cond.clinicalStatus)}
        active: bool | None
        if cs & {"active", "recurrence", "relapse"}:
            active = True
        elif cs & {"inactive", "remission", "resolved"}:
            active = False
        else:
            active = None
        abatement = _to_date(
            cond.abatementDateTime
            or (cond.abatementPeriod.end or cond.abatementPeriod.start if cond.abatementPeriod else None)
        )
        if active is None and abatement is not None:
            active = False
        facts.conditions.append(
            ConditionFact(
                groups=frozenset(groups),
                resource=f"Condition/{cond.id}",
                display=_cc_text(cond.code) or "condition",
                active=active,
                confirmed=not (vs & {"provisional", "differential", "unconfirmed"}),
                onset=_to_date(cond.onsetDateTime or (cond.onsetPeriod.start if cond.onsetPeriod else None)),
                abatement=abatement,
                recorded=_to_date(cond.recordedDate),
            )
        )

    # --- Medications ---------------------------------------------------------------------------

    def _ingredient(self, cc: Any) -> tuple[str | None, float | None]:
        """Ingredient key for a medication concept, with strength (mg per unit) when known."""
        for c in _codings(cc):
            key = self.m.ingredient_for_code(c.system or "", c.code or "")
            if key:
                prod = self.m.products.get(c.code or "")
                return key, (prod.strength_mg if prod and prod.ingredient == key else None)
        text = _cc_all_text(cc)
        return (self.m.ingredient_for_text(text), None) if text else (None, None)

    def _medication(self, res: Any, rtype: str, facts: PatientFacts, meds: dict[str, Medication]) -> None:
        status = res.status or "unknown"
        if status in ("entered-in-error", "not-taken", "intended", "cancelled", "draft"):
            return
        if rtype == "MedicationRequest" and status == "unknown":
            return
        cc = res.medicationCodeableConcept
        if cc is None and res.medicationReference is not None and res.medicationReference.reference:
            ref = res.medicationReference.reference
            med = None
            if ref.startswith("#"):
                for contained in res.contained or []:
                    if getattr(contained, "id", None) == ref[1:] and hasattr(contained, "code"):
                        med = contained
            else:
                med = meds.get("/".join(ref.split("/_history")[0].rstrip("/").split("/")[-2:]))
            cc = med.code if med is not None else None
            if cc is None and res.medicationReference.display:
                key = self.m.ingredient_for_text(res.medicationReference.display)
                if key:
                    self._add_med(facts, res, rtype, key, res.medicationReference.display, None, status)
                return
        if cc is None:
            return
        key, strength = self._ingredient(cc)
        if key is None:
            return
        self._add_med(facts, res, rtype, key, _cc_text(cc), strength, status)

    def _add_med(
        self, facts: PatientFacts, res: Any, rtype: str, key: str, display: str, strength: float | None, status: str
    ) -> None:
        ing = self.m.medications.ingredients[key]
        if rtype == "MedicationStatement":
            start = _to_date(
                res.effectiveDateTime or (res.effectivePeriod.start if res.effectivePeriod else None)
            ) or _to_date(res.dateAsserted)
            end = _to_date(res.effectivePeriod.end if res.effectivePeriod else None)
            if res.effectiveDateTime is not None and status != "active":
                end = start
            dosages = res.dosage or []
        else:
            start = _to_date(res.authoredOn)
            end = None
            dr = res.dispenseRequest
            if dr is not None:
                if dr.validityPeriod is not None:
                    start = start or _to_date(dr.validityPeriod.start)
                    end = _to_date(dr.validityPeriod.end)
                if end is None and dr.expectedSupplyDuration is not None and start is not None:
                    days = _duration_days(dr.expectedSupplyDuration)
                    if days is not None:
                        end = start + timedelta(days=days)
            dosages = res.dosageInstruction or []
            for d in dosages:
                b = d.timing.repeat.boundsPeriod if d.timing and d.timing.repeat else None
                if b is not None:
                    start = start or _to_date(b.start)
                    end = end or _to_date(b.end)
        daily, systemic = _daily_dose(dosages, strength, self.m)
        if ing.systemic_only and not systemic:
            return
        pred = daily * ing.pred_eq if (daily is not None and ing.pred_eq is not None) else None
        facts.medications.append(
            MedicationFact(
                ingredient=key,
                classes=frozenset(self.m.ingredient_classes.get(key, ())),
                resource=f"{rtype}/{res.id}",
                display=display or key,
                status="active" if status in ("active",) else status,
                start=start,
                end=end,
                daily_dose_mg=daily,
                systemic=systemic,
                pred_eq_mg=pred,
            )
        )

    def _immunization(self, imm: Immunization, facts: PatientFacts) -> None:
        if imm.status != "completed":
            return
        key, _ = self._ingredient(imm.vaccineCode)
        if key is None:
            return
        when = _to_date(imm.occurrenceDateTime) or _to_date(imm.recorded)
        facts.medications.append(
            MedicationFact(
                ingredient=key,
                classes=frozenset(self.m.ingredient_classes.get(key, ())),
                resource=f"Immunization/{imm.id}",
                display=_cc_text(imm.vaccineCode) or key,
                status="completed",
                start=when,
                end=when,
            )
        )


_PER_DAY = {"s": 86400.0, "min": 1440.0, "h": 24.0, "d": 1.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}
_MASS_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "[mg]": 1.0}
_UNIT_DOSE = {"tab", "tablet", "{tbl}", "{tablet}", "cap", "capsule", "{capsule}", "{cap}", "1"}


def _duration_days(d: Any) -> float | None:
    if d.value is None:
        return None
    unit = d.code or d.unit or ""
    per = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30, "a": 365, "h": 1 / 24}.get(unit)
    return float(d.value) * per if per is not None else None


def _daily_dose(dosages: list[Any], strength: float | None, m: Mappings) -> tuple[float | None, bool]:
    """Sum of mg/day over the dosage lines, and whether the route is systemic.

    A dose is only computed when amount and frequency are both explicit: an
    assumed "once daily" could turn 20 mg every other day into a failed
    criterion.
    """
    total: float | None = None
    systemic = True
    for d in dosages:
        if d.route is not None:
            for c in _codings(d.route):
                if c.code in m.non_systemic_snomed:
                    systemic = False
            text = _cc_text(d.route).lower()
            if any(w in text for w in m.non_systemic_words):
                systemic = False
        dose_mg = None
        for dr in d.doseAndRate or []:
            q = dr.doseQuantity
            if q is None or q.value is None:
                continue
            unit = (q.code or q.unit or "").lower()
            if unit in _MASS_MG:
                dose_mg = float(q.value) * _MASS_MG[unit]
            elif unit in _UNIT_DOSE and strength is not None:
                dose_mg = float(q.value) * strength
        rep = d.timing.repeat if d.timing is not None else None
        per_day = None
        if rep is not None and rep.periodUnit in _PER_DAY and rep.period:
            per_day = (rep.frequency or 1) * _PER_DAY[rep.periodUnit] / float(rep.period)
        if dose_mg is not None and per_day is not None:
            total = (total or 0.0) + dose_mg * per_day
    return total, systemic
