"""Reading Observations (and their components) as variables in canonical units: quantities converted by
the maps' factors (never assumed), titers, qualitative results, grades and coded answers, and the lab's
own reference range for x ULN criteria."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.fhir.answers import coded_answer
from cds_service.fhir.facts import LabResult, PatientFacts
from cds_service.fhir.lab_text import (
    MAX_LOG10,
    linear_unit,
    read_number,
    read_range_text,
    read_titer,
    same_unit,
    scale_free,
)
from cds_service.fhir.map_models import Variable
from cds_service.fhir.negation import LAB_CUE, find_negated, find_unnegated
from cds_service.fhir.read import Reader, _b, _cc_text, _codings, _d, _fmt, _i, _l, _n, _o, _s, _unit

COUNTING_OBSERVATION_STATUS = frozenset({"final", "amended", "corrected"})
# read, but never deciding alone: one newer than the final result goes to a person (audit 2, NS7)
PRELIMINARY_STATUS = "preliminary"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
RANGE_FLAGS = frozenset({"H", "HH", "L", "LL", "N"})


@dataclass(slots=True)
class _Value:
    """What one value[x] says, before limits and positivity are settled."""

    value: float | None = None
    original_value: str | None = None
    original_unit: str | None = None
    problem: str | None = None
    positive: bool | None = None
    answer: str | None = None
    comparator: str | None = None


class ObservationReader(Reader):
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
        counts = status in COUNTING_OBSERVATION_STATUS or status == PRELIMINARY_STATUS
        if not counts or not self._valid(obs, facts):
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
            unit = _unit(_o(obs.get("valueQuantity"))) or ""
            routed = var.units_elsewhere.get(unit) or var.units_elsewhere.get(linear_unit(unit) or "")
            var = self.m.variables[routed] if routed else var
        preliminary = status == PRELIMINARY_STATUS
        if var is not None:
            facts.add_lab(self._reading(var, obs, when, ref, ranges, preliminary))
        for cvar, comp in comps:
            comp_ranges = _l(_o(comp).get("referenceRange")) or (ranges if cvar.kind != "grade" else [])
            facts.add_lab(self._reading(cvar, _o(comp), when, ref, comp_ranges, preliminary))

    def _reading(
        self, var: Variable, src: dict, when: date | None, ref: str, ranges: list, preliminary: bool = False
    ) -> LabResult:
        """Read one value (of an Observation or a component) as `var` in its canonical unit."""
        v = _Value()
        for key, read in self._VALUE_READERS:
            if src.get(key) is not None:
                read(self, var, src[key], v)
                break
        if v.positive is None:
            v.positive = self._interpretation(src)
        uln, uln_source = self._limit(var, ranges, "high", v.original_unit)
        lln, lln_source = self._limit(var, ranges, "low", v.original_unit)
        if v.positive is None and v.value is not None:
            if var.positive_above is not None:
                v.positive = v.value > var.positive_above
            elif uln_source == "reference range":
                v.positive = v.value > uln  # type: ignore[operator]
        return LabResult(
            variable=var.key,
            when=when,
            resource=ref,
            value=v.value,
            unit=var.unit if v.value is not None else None,
            original_value=v.original_value,
            original_unit=v.original_unit,
            positive=v.positive,
            answer=v.answer,
            uln=uln,
            uln_source=uln_source,
            lln=lln,
            lln_source=lln_source,
            comparator=v.comparator,
            problem=v.problem,
            flag=self._range_flag(src),
            preliminary=preliminary,
        )

    def _quantity(self, var: Variable, q: Any, v: _Value) -> None:
        q = _o(q)
        raw = _n(q.get("value"))
        if raw is None:
            return
        v.original_value, v.original_unit = _fmt(raw), _unit(q)
        v.comparator = _s(q.get("comparator"))
        self._number(var, raw, v.original_unit, v)

    @staticmethod
    def _number(var: Variable, raw: float, unit: str | None, v: _Value) -> None:
        """`raw` in `unit` as `var` in its canonical unit: by the map's factor, or as 10^raw for a log10 unit
        whose linear unit the map accepts ("log{IU}/mL" is [IU]/mL). Any other unit is a problem, never
        assumed."""
        if v.comparator in ("<", "<="):
            v.positive = False  # "<20 IU/mL": below the reporting limit, i.e. not detected
        if var.kind == "titer" and (unit in (None, "") or var.factor(unit) == 1):
            v.value = raw
            return
        factor = var.factor(unit)
        if factor is not None:
            v.value = raw * factor
            return
        linear = linear_unit(unit)
        log_factor = var.factor(linear) if linear else None
        if log_factor is not None and raw <= MAX_LOG10:
            v.value = 10**raw * log_factor
            return
        v.problem = f"unit '{unit or 'none'}' is not an accepted unit for {var.label}"

    def _integer(self, var: Variable, raw: Any, v: _Value) -> None:
        n = _i(raw)
        v.original_value = str(n)
        v.value = float(n) if var.kind in ("quantity", "titer") else None  # type: ignore[arg-type]
        if var.kind == "grade":
            v.answer = v.original_value

    def _ratio(self, var: Variable, ratio: Any, v: _Value) -> None:
        ratio = _o(ratio)
        num = _n(_o(ratio.get("numerator")).get("value"))
        den = _n(_o(ratio.get("denominator")).get("value"))
        if num is None or den is None:
            return
        v.original_value = f"{_fmt(num)}:{_fmt(den)}"
        if var.kind == "titer" and num == 1:
            v.value = den
        elif den != 0 and var.kind == "quantity" and var.factor("") is not None:
            v.value = num / den

    def _string(self, var: Variable, raw: Any, v: _Value) -> None:
        s = _s(raw).strip()  # type: ignore[union-attr]
        v.original_value = s
        if var.kind in ("grade", "coded"):
            v.answer = coded_answer(var, s)
            v.problem = None if v.answer is not None else f"answer '{s[:60]}' is not one this service can read"
            return
        titer = read_titer(s) if var.kind == "titer" else None
        if titer is not None and self._word_reading(titer[1]) is not False:  # "1:160 speckled", not "1:40 neg"
            v.comparator = titer[0].comparator
            self._number(var, titer[0].value, None, v)
            return
        n = read_number(s) if var.units else None
        if n is not None and (n.unit or scale_free(var)) and self._readable_unit(var, n.unit):
            v.comparator, v.original_unit = n.comparator, n.unit
            self._number(var, n.value, n.unit or var.unit, v)  # no unit: only where every unit has factor 1
            return
        v.positive = self._word_reading(s)
        if v.positive is None and var.kind in ("quantity", "titer"):
            v.problem = f"value '{s[:60]}' is not a number in a unit accepted for {var.label}"

    @staticmethod
    def _readable_unit(var: Variable, unit: str | None) -> bool:
        return unit is None or var.factor(unit) is not None or var.factor(linear_unit(unit)) is not None

    def _concept(self, var: Variable, cc: Any, v: _Value) -> None:
        cc = _o(cc)
        v.original_value = _cc_text(cc) or None
        for system, code, _ in _codings(cc):
            if var.kind in ("grade", "coded"):
                v.answer = coded_answer(var, code)
                if v.answer is not None:
                    break
            if (system, code) in self.m.positive_codes:
                v.positive = True
                break
            if (system, code) in self.m.negative_codes:
                v.positive = False
                break
        text = _cc_text(cc)  # the text, else the first coding's display ("Pregnant" without text)
        if var.kind in ("grade", "coded"):
            v.answer = v.answer or (coded_answer(var, text) if text else None)
            if v.answer is None:
                v.problem = f"answer '{(v.original_value or '?')[:60]}' is not one this service can read"
        elif v.positive is None and text:
            v.positive = self._word_reading(text)

    def _boolean(self, var: Variable, raw: Any, v: _Value) -> None:
        flag = _b(raw)
        v.original_value = str(flag).lower()
        v.positive = flag

    def _interpretation(self, src: dict) -> bool | None:
        """Interpretation codes (POS/NEG/H/L/N/DET/ND) decide a qualitative reading the value left open."""
        interp = _l(src.get("interpretation"))
        for system, code, _ in _codings(interp[0]) if interp else []:
            if (system, code) in self.m.positive_codes:
                return True
            if (system, code) in self.m.negative_codes:
                return False
        return None

    @staticmethod
    def _range_flag(src: dict) -> str | None:
        """The lab's own H/HH/L/LL/N flag against its reference range (NS12: "above the normal reference
        range of the testing center" is decided by it when no numeric range was sent)."""
        for interp in _l(src.get("interpretation")):
            for system, code, _ in _codings(interp):
                if system == V3_INTERPRETATION and code in RANGE_FLAGS:
                    return code
        return None

    # value[x] element -> reader, in the order FHIR lists them (one value[x] per Observation)
    _VALUE_READERS = (
        ("valueQuantity", _quantity),
        ("valueInteger", _integer),
        ("valueRatio", _ratio),
        ("valueString", _string),
        ("valueCodeableConcept", _concept),
        ("valueBoolean", _boolean),
    )

    @staticmethod
    def _limit(var: Variable, ranges: list, side: str, value_unit: str | None) -> tuple[float | None, str | None]:
        """Upper/lower limit of normal in the canonical unit: the lab's own range, else the default."""
        for rr in ranges:
            q = _o(_o(rr).get(side))
            limit, unit = _n(q.get("value")), _unit(q)
            if limit is None and not _o(rr).get("low") and not _o(rr).get("high"):
                limit, unit = _range_text(_s(_o(rr).get("text")), side)  # "<100 IU/mL" (audit 2, NW3)
            if limit is not None:
                if var.unit is None and unit is not None and not same_unit(unit, value_unit):
                    break  # assay-specific units: only a range in the value's own unit is comparable
                # a range without a unit is read in the unit of the value it sits beside
                f = var.factor(unit if unit is not None else value_unit)
                if f is not None:
                    return limit * f, "reference range"
                break
        default = var.uln_default if side == "high" else var.lln_default
        return (default, "default") if default is not None else (None, None)

    def _word_reading(self, text: str) -> bool | None:
        """Negation is read before any positive word: "Non Reactive", "None detected", "No HBV DNA detected"
        and "Not present" are negative, never positive. A text with a positive word and a negative one
        that do not negate each other ("Positive; negative on repeat") is unknown, and so is anything
        with no word this service knows ("Indeterminate", "See note")."""
        t = " ".join(text.lower().replace("-", " ").split())
        if t in self.m.negative_words or t.replace(" ", "") in self.m.negative_words:
            return False
        if t in self.m.positive_words:
            return True
        positive = [w for w in self.m.positive_words if len(w) > 2]
        negative = [w for w in self.m.negative_words if len(w) > 2]
        says_positive = find_unnegated(t, positive, LAB_CUE) is not None
        says_negative = find_unnegated(t, negative) is not None or find_negated(t, positive, LAB_CUE) is not None
        if says_positive != says_negative:
            return says_positive
        return None


def _range_text(text: str | None, side: str) -> tuple[float | None, str | None]:
    """One side of a reference range written only as text, and its unit as written (None: the value's)."""
    parsed = read_range_text(text) if text else None
    if parsed is None:
        return None, None
    low, high, unit = parsed
    return (high if side == "high" else low), unit
