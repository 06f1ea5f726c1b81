"""Typed reads of FHIR JSON: each element the criteria read is checked for its FHIR type as it is read
(a number is a number, a date a FHIR date in 1800-2199), so a resource that does not fit raises
`Invalid` and is skipped and reported, never half-read. Full model validation (fhir.resources R4B) is
for strict mode only: it cost ~130 us per Observation against 18 us for these reads.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError

from cds_service.fhir.codes import UCUM, canonical_system
from cds_service.fhir.facts import PatientFacts
from cds_service.fhir.kept import Kept
from cds_service.fhir.mappings import Mappings

_FHIR_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?)?)?$"
)
# the R4B model module of each resource type read: imported when strict mode first validates one, since
# importing them all costs about 80 ms a process that the default reader (and a screen's workers) never use
MODEL_MODULES = {
    "Patient": "patient",
    "Observation": "observation",
    "Condition": "condition",
    "MedicationStatement": "medicationstatement",
    "MedicationRequest": "medicationrequest",
    "MedicationAdministration": "medicationadministration",
    "MedicationDispense": "medicationdispense",
    "Immunization": "immunization",
    "Medication": "medication",
    "Procedure": "procedure",
    "AllergyIntolerance": "allergyintolerance",
}
NORMALIZED_TYPES = frozenset(MODEL_MODULES)


@functools.cache
def model(resource_type: str) -> type[BaseModel]:
    """The fhir.resources R4B model of a resource type of MODEL_MODULES."""
    return getattr(importlib.import_module(f"fhir.resources.R4B.{MODEL_MODULES[resource_type]}"), resource_type)


class Invalid(ValueError):
    """An element the criteria read does not have its FHIR type."""


# --- typed reads of JSON elements ------------------------------------------------------------------


def _s(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise Invalid("string expected")
    return v


_INFINITE = (float("inf"), float("-inf"))
# FHIR's integer and unsignedInt are 32-bit: a larger one is a typing error, and no calendar or float holds
# what some make of it (`json` reads 10**400 as an int, and float() of it raises OverflowError, not Invalid)
_INTEGERS = (-(2**31), 2**31 - 1)


def _n(v: Any) -> float | None:
    if v is None:
        return None
    if v.__class__ is float:  # most numbers a record holds: decided without isinstance
        if v != v or v in _INFINITE:
            raise Invalid("number expected")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Invalid("number expected")
    try:
        f = float(v)
    except OverflowError as e:  # an int no float holds
        raise Invalid("number out of range") from e
    if f != f or f in _INFINITE:  # a float subclass
        raise Invalid("number expected")
    return f


def _i(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise Invalid("integer expected")
    if not _INTEGERS[0] <= v <= _INTEGERS[1]:
        raise Invalid("integer out of range")
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


DATES_KEPT = 50_000  # then the memo starts again: a few MiB at most, each text kept at most DATE_CHARS long
DATE_CHARS = 35  # an instant with an offset and nanoseconds; a longer one (more digits) is read each time
_DATES: Kept[str, date] = Kept(DATES_KEPT, DATE_CHARS)  # dates read, by their text: resources share encounters' times


def _d(v: Any) -> date | None:
    """A FHIR date, dateTime or instant, as the calendar date it names (partial dates: first day). A text
    read once is kept (`_DATES`): the same times come back resource after resource and record after record,
    and the pattern, three ints and a date cost ten times the look-up. Only valid ones are kept."""
    if v is None:
        return None
    kept = _DATES.get(v) if isinstance(v, str) else None
    if kept is not None:
        return kept
    return _DATES.keep(v, _read_date(v))


def _read_date(v: Any) -> date:
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
    """(system, code, display) of each coding of a concept; "" for a missing system or code; the system as
    the maps write it (`codes.canonical_system`: an OID, a trailing slash, a SNOMED CT edition), the code
    without surrounding space (" 55464009" was a code no map holds, read as another disease). Every element
    type-checked as `_o`, `_l` and `_s` do, written out here: a record reads several concepts a resource."""
    out = []
    for c in _l(_o(cc).get("coding")):
        if not isinstance(c, dict):
            if c is not None:
                raise Invalid("object expected")
            c = {}  # a null coding reads as an empty one, as `_o` reads it
        system, code, display = c.get("system"), c.get("code"), c.get("display")
        if not (isinstance(system, str) or system is None) or not (isinstance(code, str) or code is None):
            raise Invalid("string expected")
        if not (isinstance(display, str) or display is None):
            raise Invalid("string expected")
        out.append((canonical_system(system) if system else "", code.strip() if code else "", display))
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
            if isinstance(item, dict) and item.get("resourceType") not in (None, "Bundle"):
                yield item  # a resource, as most items are: no generator of its own
            else:
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


class Reader:
    """What every resource reader shares: the maps, and full validation in strict mode."""

    def __init__(self, mappings: Mappings, strict: bool = False) -> None:
        self.m = mappings
        self.strict = strict

    def _valid(self, res: dict, facts: PatientFacts) -> bool:
        """In strict mode, full fhir.resources validation of a resource about to be read."""
        if not self.strict:
            return True
        try:
            model(res["resourceType"]).model_validate(res)
            return True
        except (ValidationError, ValueError, TypeError):
            facts.skipped.append(f"{res['resourceType']}/{res.get('id', '?')} failed FHIR R4 validation")
            return False
