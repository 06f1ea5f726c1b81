"""Reading medication history: MedicationStatement, MedicationRequest, MedicationAdministration,
MedicationDispense and Immunization as ingredient facts with dates and, when amount and frequency are
both explicit, a daily dose in mg (never assumed: an assumed "once daily" could turn 20 mg every other
day into a failed criterion). A stopped record with no end date has an unknown last use, bounded by the
date it was asserted; refills extend an order's course; a drug that cannot be identified makes its
source unable to say "none on record"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from cds_service.fhir.codes import ATC, CVX, RXNORM, SNOMED
from cds_service.fhir.facts import MedicationFact, PatientFacts
from cds_service.fhir.mappings import Mappings
from cds_service.fhir.read import Invalid, Reader, _cc_all_text, _cc_text, _codings, _d, _i, _l, _n, _o, _ref_key, _s


class MedicationReader(Reader):
    def _ingredient(self, cc: Any) -> tuple[str | None, float | None]:
        """Ingredient key for a medication concept, with strength (mg per unit) when known."""
        for system, code, _ in _codings(cc):
            key = self.m.ingredient_for_code(system, code)
            if key:
                prod = self.m.products.get(code)
                if prod and prod.ingredient == key and prod.strength_mg is not None:
                    return key, prod.strength_mg
                return key, strength_from_text(_cc_all_text(cc))  # "predniSONE 10 MG Oral Tablet" (NW4)
        text = _cc_all_text(cc)
        key = self.m.ingredient_for_text(text) if text else None
        return key, (strength_from_text(text) if key else None)

    def _medication(self, res: dict, rtype: str, facts: PatientFacts, meds: Mapping[str, dict]) -> None:
        status = _s(res.get("status")) or "unknown"
        if status in _NOT_GIVEN:
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
        if key is None and not display and not display_fallback and not _known_code(cc):
            # the drug cannot be identified at all (an unresolvable reference, a code of no known system):
            # its source can no longer say "none on record"
            facts.unread[rtype] = facts.unread.get(rtype, 0) + 1
            return
        if key is None or not self._valid(res, facts):
            return
        self._add_med(facts, res, rtype, key, display, strength, status)

    def _add_med(
        self, facts: PatientFacts, res: dict, rtype: str, key: str, display: str, strength: float | None, status: str
    ) -> None:
        if rtype in ("MedicationAdministration", "MedicationDispense"):
            self._add_given(facts, res, rtype, key, display, strength, status)
            return
        if rtype == "MedicationStatement":
            period = _o(res.get("effectivePeriod"))
            point = _d(res.get("effectiveDateTime"))
            start = point or _d(period.get("start")) or _d(res.get("dateAsserted"))
            end = _d(period.get("end"))
            if point is not None and status == "completed":
                end = start  # taken on that day, course done; stopped or on hold: the stop date is unknown
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
                if days is not None:  # each refill is another supply: the course runs to the last one's end
                    refills = max(_i(dr.get("numberOfRepeatsAllowed")) or 0, 0)
                    end = _after(start, days, 1 + refills)
            dosages = _l(res.get("dosageInstruction"))
            for d in dosages:
                bounds = _o(_o(_o(_o(d).get("timing")).get("repeat")).get("boundsPeriod"))
                if bounds:
                    start = start or _d(bounds.get("start"))
                    end = end or _d(bounds.get("end"))
        unknown_end = end is None and status in ("stopped", "on-hold", "completed")
        bound = _d(res.get("dateAsserted")) or _d(_o(res.get("meta")).get("lastUpdated")) if unknown_end else None
        self._append(facts, res, rtype, key, display, status, start, end, dosages, strength, unknown_end, bound)

    def _add_given(
        self, facts: PatientFacts, res: dict, rtype: str, key: str, display: str, strength: float | None, status: str
    ) -> None:
        """An administration is a dose given on a day (an infusion); a dispense covers its days' supply."""
        if rtype == "MedicationAdministration":
            period = _o(res.get("effectivePeriod"))
            start = _d(res.get("effectiveDateTime")) or _d(period.get("start"))
            end = _d(period.get("end")) or start
            dosage = _o(res.get("dosage"))
            dosages = [{"route": dosage.get("route")}] if dosage.get("route") is not None else []
            self._append(facts, res, rtype, key, display, "completed", start, end, dosages, None, False, None)
            return
        start = _d(res.get("whenHandedOver")) or _d(res.get("whenPrepared"))
        days = _duration_days(_o(res.get("daysSupply")))
        end = _after(start, days) if start is not None and days is not None else start
        state = "active" if days is not None and status in ("completed", "in-progress") else "completed"
        dosages = _l(res.get("dosageInstruction"))
        self._append(facts, res, rtype, key, display, state, start, end, dosages, strength, False, None)

    def _append(
        self,
        facts: PatientFacts,
        res: dict,
        rtype: str,
        key: str,
        display: str,
        status: str,
        start: Any,
        end: Any,
        dosages: list,
        strength: float | None,
        end_unknown: bool,
        end_bound: Any,
    ) -> None:
        ing = self.m.medications.ingredients[key]
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
                end_unknown=end_unknown,
                end_bound=end_bound,
                routes=self._routes(dosages),
            )
        )

    def _routes(self, dosages: list) -> frozenset[str]:
        out = set()
        for d in dosages:
            route = _o(d).get("route")
            if route is not None:
                codings = [(system, code) for system, code, _ in _codings(route)]
                out.add(self.m.route_of(codings, _cc_all_text(route)))
        return frozenset(out)

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


# statuses that mean the drug was not given: never evidence of use
_NOT_GIVEN = frozenset(
    {"entered-in-error", "not-taken", "intended", "cancelled", "draft", "not-done", "declined", "preparation"}
)


def _known_code(cc: Any) -> bool:
    """A coding in a system the maps are written in: a code there that maps to nothing names another drug."""
    return any(system in (RXNORM, CVX, ATC, SNOMED) and code for system, code, _ in _codings(cc)) if cc else False


_PER_DAY = {"s": 86400.0, "min": 1440.0, "h": 24.0, "d": 1.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}
_MASS_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "[mg]": 1.0}
_UNIT_DOSE = {"tab", "tablet", "{tbl}", "{tablet}", "cap", "capsule", "{capsule}", "{cap}", "1"}
_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30, "a": 365, "h": 1 / 24}


def _duration_days(d: dict) -> float | None:
    """A Duration in days; a negative one is not a supply (Invalid: the resource is skipped and reported,
    never half-read)."""
    value = _n(d.get("value"))
    per = _DAYS.get(_s(d.get("code")) or _s(d.get("unit")) or "")
    if value is None or per is None:
        return None
    if value < 0:
        raise Invalid("duration expected")
    return value * per


def _after(start: date, days: float, times: int = 1) -> date:
    """The day `times` supplies of `days` after `start`. A supply no calendar holds (a daysSupply typed as
    1e12, a refill count of 2^63) is Invalid like any other element that does not fit: it raised
    OverflowError out of the reader, which failed the hook and stopped a whole screen."""
    try:
        return start + timedelta(days=days * times)
    except OverflowError as e:
        raise Invalid("duration out of range") from e


# FHIR TimingAbbreviation (v3-GTSAbbreviation): how many doses a day each code means (audit 2, NW4)
_TIMING_CODES = {"QD": 1.0, "AM": 1.0, "PM": 1.0, "BED": 1.0, "BID": 2.0, "TID": 3.0, "QID": 4.0, "QOD": 0.5}
_EVERY_N_HOURS = re.compile(r"^Q([1-9]\d?)H$")
_STRENGTH = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(mg|mcg|g)\b(?!\s*/)", re.IGNORECASE)


def _per_day_from_code(code: Any) -> float | None:
    """Doses a day from timing.code: 'BID' -> 2, 'Q8H' -> 3; None for any other code (never assumed)."""
    if not code:
        return None
    found = {c.strip().upper() for _, c, _ in _codings(code) if c} | {_cc_text(code).strip().upper()} - {""}
    values = set()
    for c in found:
        every = _EVERY_N_HOURS.match(c)
        per_day = 24 / int(every.group(1)) if every else _TIMING_CODES.get(c)
        if per_day is not None:
            values.add(per_day)
    return values.pop() if len(values) == 1 else None


def strength_from_text(text: str) -> float | None:
    """mg per tablet from a clinical-drug name ("predniSONE 10 MG Oral Tablet" -> 10): one strength only,
    never a concentration ("5 MG/ML") or a combination ("X 5 MG / Y 10 MG")."""
    found = {float(v) * _MASS_MG[u.lower()] for v, u in _STRENGTH.findall(text)}
    return found.pop() if len(found) == 1 and "/" not in text else None


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
        timing = _o(d.get("timing"))
        rep = _o(timing.get("repeat"))
        period, unit = _n(rep.get("period")), _s(rep.get("periodUnit"))
        per_day = None
        if unit in _PER_DAY and period:
            per_day = (_i(rep.get("frequency")) or 1) * _PER_DAY[unit] / period
        elif not rep:
            per_day = _per_day_from_code(timing.get("code"))
        if dose_mg is not None and per_day is not None:
            total = (total or 0.0) + dose_mg * per_day
    return total, systemic
