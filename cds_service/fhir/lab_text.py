"""Lab values as laboratories write them in text (clinical audit 2, NW2 and NW3).

* a number with a comparator and maybe a unit in a string: "<20", ">60", ">= 90 mL/min/1.73m2";
* a titer with words after it: "1:160 speckled", "<1:40";
* a reference range given only as text: "<100 IU/mL", "0.5-1.2 mg/dL", ">= 40";
* a viral load in log10 units: "log{IU}/mL", "log IU/mL", "log10 copies/mL" (read as 10^x in the linear
  unit, which the variable's map must accept: converted, never assumed).

Each reader returns None for anything it cannot read whole; the caller then says the result is present
but unreadable, never that there is no result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cds_service.fhir.map_models import Variable

_CMP = r"(<=|>=|≤|≥|<|>)"
_NUM = r"(\d+(?:\.\d+)?)"
_COMPARED = re.compile(rf"^\s*{_CMP}?\s*{_NUM}\s*(.*?)\s*$")
_TITER = re.compile(rf"^\s*{_CMP}?\s*1\s*:\s*{_NUM}\s*([A-Za-z][A-Za-z ,;/()-]*)?\s*$")
_RANGE = re.compile(rf"^\s*{_NUM}\s*(?:-|–|to)\s*{_NUM}\s*(.*?)\s*$")
_LOG = re.compile(r"^\s*(?:log\s*10|log\(10\)|log_10|log|lg)\s*(.+?)\s*$", re.IGNORECASE)
_ASCII_CMP = {"≤": "<=", "≥": ">="}
MAX_LOG10 = 15.0  # 10^15 of anything a lab counts is not a result; refuse rather than overflow


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    comparator: str | None  # "<", "<=", ">", ">=" or None
    unit: str | None  # as written after the number, None when there is none


def _cmp(s: str | None) -> str | None:
    return _ASCII_CMP.get(s, s) if s else None


def read_number(text: str) -> Number | None:
    """'>60' -> Number(60, '>', None); '<20 IU/mL' -> Number(20, '<', 'IU/mL'); 'positive' -> None."""
    m = _COMPARED.match(text)
    if not m:
        return None
    return Number(float(m.group(2)), _cmp(m.group(1)), m.group(3) or None)


def read_titer(text: str) -> tuple[Number, str] | None:
    """'1:160 speckled' -> (Number(160, None, None), 'speckled'); '<1:40' -> (Number(40, '<', None), '')."""
    m = _TITER.match(text)
    if not m:
        return None
    return Number(float(m.group(2)), _cmp(m.group(1)), None), (m.group(3) or "").strip()


def read_range_text(text: str) -> tuple[float | None, float | None, str | None] | None:
    """referenceRange.text -> (low, high, unit): '<100 IU/mL' -> (None, 100, 'IU/mL'); '0.5-1.2' ->
    (0.5, 1.2, None). None for text that states no bound ('Negative', 'See report')."""
    m = _RANGE.match(text)
    if m:
        return float(m.group(1)), float(m.group(2)), m.group(3) or None
    n = read_number(text)
    if n is None or n.comparator is None:
        return None
    if n.comparator in ("<", "<="):
        return None, n.value, n.unit
    return n.value, None, n.unit


def linear_unit(unit: str | None) -> str | None:
    """'log{IU}/mL' -> '[IU]/mL'; 'log copies/mL' -> 'copies/mL'; None when the unit is not a log unit."""
    m = _LOG.match(unit or "")
    if not m:
        return None
    return m.group(1).replace("{IU}", "[IU]")


def same_unit(a: str | None, b: str | None) -> bool:
    """'IU/mL' and '[IU]/mL' are one unit written two ways (text and UCUM code)."""
    if a is None or b is None:
        return a is b
    return re.sub(r"[\[\]{}\s]", "", a).lower() == re.sub(r"[\[\]{}\s]", "", b).lower()


def scale_free(var: Variable) -> bool:
    """Every unit the variable accepts has factor 1 (eGFR, %, IU/L = mIU/mL): a number written without its
    unit reads the same whatever unit was meant, so reading it assumes no scale."""
    return bool(var.units) and all(f == 1 for f in var.units.values())
