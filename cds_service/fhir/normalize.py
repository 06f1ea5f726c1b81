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

import dataclasses
import re
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError

from cds_service.fhir.answers import coded_answer
from cds_service.fhir.codes import UCUM
from cds_service.fhir.facts import ConditionFact, LabResult, MedicationFact, PatientFacts, ProcedureFact
from cds_service.fhir.mappings import Mappings, Variable

COUNTING_OBSERVATION_STATUS = frozenset({"final", "amended", "corrected"})
_TITER = re.compile(r"^\s*1\s*:\s*(\d+(?:\.\d+)?)\s*$")
_FHIR_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?)?)?$"
)
_MODELS = {
    "Patient": Patient,
    "Observation": Observation,
    "Condition": Condition,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "Immunization": Immunization,
    "Medication": Medication,
    "Procedure": Procedure,
}


class Invalid(ValueError):
    """An element the criteria read does not have its FHIR type."""


# --- typed reads of JSON elements ------------------------------------------------------------------


def _s(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise Invalid("string expected")
    return v


def _n(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise Invalid("number expected")
    return float(v)


def _i(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise Invalid("integer expected")
    return v


def _b(v: Any) -> bool | None:
    if v is None:
        return None
    if not isinstance(v, bool):
        raise Invalid("boolean expected")
    return v


def _o(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Invalid("object expected")
    return v


def _l(v: Any) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise Invalid("array expected")
    return v


_YEARS = (1800, 2199)  # dates a record can mean; criteria look back and forward at most a few decades


def _d(v: Any) -> date | None:
    """A FHIR date, dateTime or instant, as the calendar date it names (partial dates: first day)."""
    if v is None:
        return None
    m = _FHIR_DATE.match(_s(v) or "")
    if not m:
        raise Invalid("date expected")
    if not _YEARS[0] <= int(m.group(1)) <= _YEARS[1]:
        raise Invalid("date out of range")  # 9999-12-31 is a placeholder, not a date; arithmetic on it overflows
    try:
        return date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError as e:
        raise Invalid("date out of range") from e


def _codings(cc: Any) -> list[tuple[str, str, str | None]]:
    out = []
    for c in _l(_o(cc).get("coding")):
        c = _o(c)
        out.append((_s(c.get("system")) or "", _s(c.get("code")) or "", _s(c.get("display"))))
    return out


def _cc_text(cc: Any) -> str:
    """The concept's text, else its first coding display."""
    cc = _o(cc)
    text = _s(cc.get("text"))
    if text:
        return text
    return next((d for _, _, d in _codings(cc) if d), "")


def _cc_all_text(cc: Any) -> str:
    """Text and every display, for name matching."""
    cc = _o(cc)
    return " ".join(p for p in [_s(cc.get("text")) or "", *[d or "" for _, _, d in _codings(cc)]] if p)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _unit(q: dict) -> str | None:
    system, code, unit = _s(q.get("system")), _s(q.get("code")), _s(q.get("unit"))
    return code if (system == UCUM and code) else (unit or code)


def _ref_key(ref: str) -> str:
    """'http://x/fhir/Medication/1/_history/2' -> 'Medication/1'."""
    return "/".join(ref.split("/_history")[0].rstrip("/").split("/")[-2:])


def iter_resources(data: Any) -> Iterable[dict]:
    """Yield resources from a resource, a Bundle (any type), or a list of either."""
    if isinstance(data, list):
        for item in data:
            yield from iter_resources(item)
    elif isinstance(data, dict):
        if data.get("resourceType") == "Bundle":
            entries = data.get("entry")
            for entry in entries if isinstance(entries, list) else []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    yield from iter_resources(res)
        elif "resourceType" in data:
            yield data


class Normalizer:
    """Turns one patient's FHIR resources into `PatientFacts` using the mappings."""

    def __init__(self, mappings: Mappings, strict: bool = False) -> None:
        self.m = mappings
        self.strict = strict

    # --- entry point ---------------------------------------------------------------------------

    def normalize(
        self,
        resources: Iterable[dict],
        patient_id: str | None = None,
        gathered: Iterable[str] = (),
    ) -> PatientFacts:
        """`gathered`: the kinds ("Observation", "Condition", "Medication") that were looked
        for completely, so that their absence means "none on record"."""
        facts = PatientFacts(patient=f"Patient/{patient_id}" if patient_id else "Patient/unknown")
        facts.gathered.update(gathered)
        meds_by_ref: dict[str, dict] = {}
        pending: list[dict] = []
        for res in resources:
            rtype = res.get("resourceType")
            if rtype == "Medication":
                if self._valid(res, facts):
                    meds_by_ref[f"Medication/{res.get('id')}"] = res
            elif rtype in _MODELS:
                pending.append(res)
        for res in pending:
            rtype = res["resourceType"]
            try:
                if rtype == "Observation":
                    self._observation(res, facts)
                elif rtype == "Patient":
                    self._patient(res, patient_id, facts)
                elif rtype == "Condition":
                    self._condition(res, facts)
                elif rtype in ("MedicationStatement", "MedicationRequest"):
                    self._medication(res, rtype, facts, meds_by_ref)
                elif rtype == "Immunization":
                    self._immunization(res, facts)
                elif rtype == "Procedure":
                    self._procedure(res, facts)
            except Invalid:
                facts.skipped.append(f"{rtype}/{res.get('id', '?')} failed FHIR R4 validation")
        for key, var in self.m.variables.items():
            for other in var.also_from:
                for r in facts.labs.get(other, ()):
                    facts.add_lab(dataclasses.replace(r, variable=key))
        facts.sort()
        return facts

    def _valid(self, res: dict, facts: PatientFacts) -> bool:
        """In strict mode, full fhir.resources validation of a resource about to be read."""
        if not self.strict:
            return True
        try:
            _MODELS[res["resourceType"]].model_validate(res)
            return True
        except (ValidationError, ValueError, TypeError):
            facts.skipped.append(f"{res['resourceType']}/{res.get('id', '?')} failed FHIR R4 validation")
            return False

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
        died = _d(res.get("deceasedDateTime"))
        facts.deceased = died is not None or _b(res.get("deceasedBoolean")) is True
        facts.deceased_date = died

    # --- Observation ---------------------------------------------------------------------------

    def _variable_for(self, cc: Any) -> Variable | None:
        index = self.m.obs_index
        for system, code, _ in _codings(cc):
            key = index.get((system, code))
            if key:
                return self.m.variables[key]
        return None

    def _observation(self, obs: dict, facts: PatientFacts) -> None:
        var = self._variable_for(obs.get("code"))
        comps = [(self._variable_for(_o(c).get("code")), c) for c in _l(obs.get("component"))]
        comps = [(v, c) for v, c in comps if v is not None]
        if var is None and not comps:
            return  # no criterion reads it: not even validated
        status = _s(obs.get("status"))
        if status not in COUNTING_OBSERVATION_STATUS or not self._valid(obs, facts):
            return
        period = _o(obs.get("effectivePeriod"))
        when = (
            _d(obs.get("effectiveDateTime"))
            or _d(period.get("end"))
            or _d(period.get("start"))
            or _d(obs.get("effectiveInstant"))
            or _d(obs.get("issued"))
        )
        ref = f"Observation/{_s(obs.get('id'))}"
        ranges = _l(obs.get("referenceRange"))
        if var is not None and var.units_elsewhere:
            routed = var.units_elsewhere.get(_unit(_o(obs.get("valueQuantity"))) or "")
            var = self.m.variables[routed] if routed else var
        if var is not None:
            facts.add_lab(self._reading(var, obs, when, ref, ranges))
        for cvar, comp in comps:
            comp_ranges = _l(_o(comp).get("referenceRange")) or (ranges if cvar.kind != "grade" else [])
            facts.add_lab(self._reading(cvar, _o(comp), when, ref, comp_ranges))

    def _reading(self, var: Variable, src: dict, when: date | None, ref: str, ranges: list) -> LabResult:
        """Read one value (of an Observation or a component) as `var` in its canonical unit."""
        value: float | None = None
        orig_value: str | None = None
        orig_unit: str | None = None
        problem: str | None = None
        positive: bool | None = None
        answer: str | None = None
        comparator: str | None = None

        if "valueQuantity" in src and _o(src["valueQuantity"]).get("value") is not None:
            q = _o(src["valueQuantity"])
            raw = _n(q.get("value"))
            assert raw is not None
            orig_value, orig_unit = _fmt(raw), _unit(q)
            comparator = _s(q.get("comparator"))
            if comparator in ("<", "<="):
                positive = False  # "<20 IU/mL": below the reporting limit, i.e. not detected
            if var.kind == "titer" and (orig_unit in (None, "") or var.factor(orig_unit) == 1):
                value = raw
            else:
                factor = var.factor(orig_unit)
                if factor is None:
                    problem = f"unit '{orig_unit or 'none'}' is not an accepted unit for {var.label}"
                else:
                    value = raw * factor
        elif src.get("valueInteger") is not None:
            raw_i = _i(src["valueInteger"])
            orig_value = str(raw_i)
            value = float(raw_i) if var.kind in ("quantity", "titer") else None  # type: ignore[arg-type]
            if var.kind == "grade":
                answer = orig_value
        elif "valueRatio" in src and _o(src["valueRatio"]).get("denominator") is not None:
            ratio = _o(src["valueRatio"])
            num = _n(_o(ratio.get("numerator")).get("value"))
            den = _n(_o(ratio.get("denominator")).get("value"))
            if num is not None and den is not None:
                orig_value = f"{_fmt(num)}:{_fmt(den)}"
                if var.kind == "titer" and num == 1:
                    value = den
                elif den != 0 and var.kind == "quantity" and var.factor("") is not None:
                    value = num / den
        elif src.get("valueString") is not None:
            s = _s(src["valueString"]).strip()  # type: ignore[union-attr]
            orig_value = s
            m = _TITER.match(s)
            if m and var.kind == "titer":
                value = float(m.group(1))
            elif var.kind in ("grade", "coded"):
                answer = coded_answer(var, s)
                problem = None if answer is not None else f"answer '{s[:60]}' is not one this service can read"
            else:
                positive = self._word_reading(s)
        elif src.get("valueCodeableConcept") is not None:
            cc = _o(src["valueCodeableConcept"])
            orig_value = _cc_text(cc) or None
            for system, code, _ in _codings(cc):
                if var.kind in ("grade", "coded"):
                    answer = coded_answer(var, code)
                    if answer is not None:
                        break
                if (system, code) in self.m.positive_codes:
                    positive = True
                    break
                if (system, code) in self.m.negative_codes:
                    positive = False
                    break
            text = _s(cc.get("text"))
            if var.kind in ("grade", "coded"):
                answer = answer or (coded_answer(var, text) if text else None)
                if answer is None:
                    problem = f"answer '{(orig_value or '?')[:60]}' is not one this service can read"
            elif positive is None and text:
                positive = self._word_reading(text)
        elif src.get("valueBoolean") is not None:
            flag = _b(src["valueBoolean"])
            orig_value = str(flag).lower()
            positive = flag

        if positive is None:
            # Interpretation codes (POS/NEG/H/L/N/DET/ND) decide a qualitative reading the value left open.
            interp = _l(src.get("interpretation"))
            for system, code, _ in _codings(interp[0]) if interp else []:
                if (system, code) in self.m.positive_codes:
                    positive = True
                    break
                if (system, code) in self.m.negative_codes:
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
    def _limit(var: Variable, ranges: list, side: str, value_unit: str | None) -> tuple[float | None, str | None]:
        """Upper/lower limit of normal in the canonical unit: the lab's own range, else the default."""
        for rr in ranges:
            q = _o(_o(rr).get(side))
            limit = _n(q.get("value"))
            if limit is not None:
                unit = _unit(q)
                if var.unit is None and unit is not None and unit != value_unit:
                    break  # assay-specific units: only a range in the value's own unit is comparable
                # a range without a unit is read in the unit of the value it sits beside
                f = var.factor(unit if unit is not None else value_unit)
                if f is not None:
                    return limit * f, "reference range"
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

    def _condition(self, cond: dict, facts: PatientFacts) -> None:
        code = _o(cond.get("code"))
        groups: set[str] = set()
        history = False
        for system, c, _ in _codings(code):
            hits = self.m.condition_groups(system, c)
            groups |= hits
            history = history or bool(hits and self.m.is_history_code(system, c))
        text = _s(code.get("text"))
        if not groups and text:
            groups |= self.m.condition_groups_from_text(text)
        if not groups:
            return
        vs = {c for _, c, _ in _codings(cond.get("verificationStatus"))}
        if vs & {"refuted", "entered-in-error"} or not self._valid(cond, facts):
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
                confirmed=not (vs & {"provisional", "differential", "unconfirmed"}),
                onset=_d(cond.get("onsetDateTime")) or _d(on_period.get("start")),
                abatement=abatement,
                recorded=_d(cond.get("recordedDate")),
                history=history,
            )
        )

    # --- Medications ---------------------------------------------------------------------------

    def _ingredient(self, cc: Any) -> tuple[str | None, float | None]:
        """Ingredient key for a medication concept, with strength (mg per unit) when known."""
        for system, code, _ in _codings(cc):
            key = self.m.ingredient_for_code(system, code)
            if key:
                prod = self.m.products.get(code)
                return key, (prod.strength_mg if prod and prod.ingredient == key else None)
        text = _cc_all_text(cc)
        return (self.m.ingredient_for_text(text), None) if text else (None, None)

    def _medication(self, res: dict, rtype: str, facts: PatientFacts, meds: dict[str, dict]) -> None:
        status = _s(res.get("status")) or "unknown"
        if status in ("entered-in-error", "not-taken", "intended", "cancelled", "draft"):
            return
        if rtype == "MedicationRequest" and status == "unknown":
            return
        cc = res.get("medicationCodeableConcept")
        display_fallback = None
        if cc is None:
            mref = _o(res.get("medicationReference"))
            ref = _s(mref.get("reference"))
            if ref:
                if ref.startswith("#"):
                    med = next((c for c in _l(res.get("contained")) if _o(c).get("id") == ref[1:]), None)
                else:
                    med = meds.get(_ref_key(ref))
                cc = _o(med).get("code") if med is not None else None
            display_fallback = _s(mref.get("display"))
        key, strength = self._ingredient(cc) if cc is not None else (None, None)
        display = _cc_text(cc) if cc is not None else ""
        if key is None and display_fallback:
            key, display = self.m.ingredient_for_text(display_fallback), display_fallback
        if key is None or not self._valid(res, facts):
            return
        self._add_med(facts, res, rtype, key, display, strength, status)

    def _add_med(
        self, facts: PatientFacts, res: dict, rtype: str, key: str, display: str, strength: float | None, status: str
    ) -> None:
        ing = self.m.medications.ingredients[key]
        if rtype == "MedicationStatement":
            period = _o(res.get("effectivePeriod"))
            point = _d(res.get("effectiveDateTime"))
            start = point or _d(period.get("start")) or _d(res.get("dateAsserted"))
            end = _d(period.get("end"))
            if point is not None and status != "active":
                end = start
            dosages = _l(res.get("dosage"))
        else:
            start = _d(res.get("authoredOn"))
            end = None
            dr = _o(res.get("dispenseRequest"))
            validity = _o(dr.get("validityPeriod"))
            if validity:
                start = start or _d(validity.get("start"))
                end = _d(validity.get("end"))
            supply = _o(dr.get("expectedSupplyDuration"))
            if end is None and supply and start is not None:
                days = _duration_days(supply)
                if days is not None:
                    end = start + timedelta(days=days)
            dosages = _l(res.get("dosageInstruction"))
            for d in dosages:
                bounds = _o(_o(_o(_o(d).get("timing")).get("repeat")).get("boundsPeriod"))
                if bounds:
                    start = start or _d(bounds.get("start"))
                    end = end or _d(bounds.get("end"))
        daily, systemic = _daily_dose(dosages, strength, self.m)
        if ing.systemic_only and not systemic:
            return
        pred = daily * ing.pred_eq if (daily is not None and ing.pred_eq is not None) else None
        facts.medications.append(
            MedicationFact(
                ingredient=key,
                classes=frozenset(self.m.ingredient_classes.get(key, ())),
                resource=f"{rtype}/{_s(res.get('id'))}",
                display=display or key,
                status=status,
                start=start,
                end=end,
                daily_dose_mg=daily,
                pred_eq_mg=pred,
            )
        )

    def _procedure(self, proc: dict, facts: PatientFacts) -> None:
        status = _s(proc.get("status")) or "unknown"
        if status in ("entered-in-error", "not-done", "preparation"):
            return
        code = _o(proc.get("code"))
        codings = [(system, c) for system, c, _ in _codings(code)]
        groups = self.m.procedure_groups(codings, _cc_all_text(code))
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

    def _immunization(self, imm: dict, facts: PatientFacts) -> None:
        if _s(imm.get("status")) != "completed":
            return
        key, _ = self._ingredient(imm.get("vaccineCode"))
        if key is None or not self._valid(imm, facts):
            return
        when = _d(imm.get("occurrenceDateTime")) or _d(imm.get("recorded"))
        facts.medications.append(
            MedicationFact(
                ingredient=key,
                classes=frozenset(self.m.ingredient_classes.get(key, ())),
                resource=f"Immunization/{_s(imm.get('id'))}",
                display=_cc_text(imm.get("vaccineCode")) or key,
                status="completed",
                start=when,
                end=when,
            )
        )


_PER_DAY = {"s": 86400.0, "min": 1440.0, "h": 24.0, "d": 1.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}
_MASS_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "[mg]": 1.0}
_UNIT_DOSE = {"tab", "tablet", "{tbl}", "{tablet}", "cap", "capsule", "{capsule}", "{cap}", "1"}
_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30, "a": 365, "h": 1 / 24}


def _duration_days(d: dict) -> float | None:
    value = _n(d.get("value"))
    per = _DAYS.get(_s(d.get("code")) or _s(d.get("unit")) or "")
    return value * per if value is not None and per is not None else None


def _daily_dose(dosages: list, strength: float | None, m: Mappings) -> tuple[float | None, bool]:
    """Sum of mg/day over the dosage lines, and whether the route is systemic.

    A dose is only computed when amount and frequency are both explicit: an
    assumed "once daily" could turn 20 mg every other day into a failed
    criterion.
    """
    total: float | None = None
    systemic = True
    for d in dosages:
        d = _o(d)
        route = d.get("route")
        if route is not None:
            if any(code in m.non_systemic_snomed for _, code, _ in _codings(route)):
                systemic = False
            text = _cc_text(route).lower()
            if any(w in text for w in m.non_systemic_words):
                systemic = False
        dose_mg = None
        for dr in _l(d.get("doseAndRate")):
            q = _o(_o(dr).get("doseQuantity"))
            value = _n(q.get("value"))
            if value is None:
                continue
            unit = (_s(q.get("code")) or _s(q.get("unit")) or "").lower()
            if unit in _MASS_MG:
                dose_mg = value * _MASS_MG[unit]
            elif unit in _UNIT_DOSE and strength is not None:
                dose_mg = value * strength
        rep = _o(_o(d.get("timing")).get("repeat"))
        period, unit = _n(rep.get("period")), _s(rep.get("periodUnit"))
        per_day = None
        if unit in _PER_DAY and period:
            per_day = (_i(rep.get("frequency")) or 1) * _PER_DAY[unit] / period
        if dose_mg is not None and per_day is not None:
            total = (total or 0.0) + dose_mg * per_day
    return total, systemic
