"""Suggested rules for imported bullets: one per threshold the wording makes clear.

A bullet often sets several limits ("ANC >= 1.5 x 10^9/L, Hb >= 9 g/dL, platelets >= 75 x 10^9/L"). Each
threshold (an operator, a number and a unit, or a multiple of the ULN) is read where it stands and given
to the measure named nearest before it in the same phrase; the bullet's suggestion is that rule, or
`all` of them (`any` when the bullet joins them with "or" alone). Strictness is kept as written
("> 94" stays ">", never ">="). A suggestion is checked
against the maps and never decides a verdict until a person promotes it to `rule`.

Linear in the bullet's length: names and thresholds are each found in one pass, and a threshold looks
back for its name by bisection (an import must stay fast on a hostile 64 KB bullet).
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from cds_service.eligibility.rules import RuleError, RuleParser
from cds_service.fhir.mappings import Mappings

_OPS = {"≥": ">=", ">=": ">=", "≤": "<=", "<=": "<=", ">": ">", "<": "<", "at least": ">=",
        "no more than": "<=", "greater than or equal to": ">=", "less than or equal to": "<=",
        "greater than": ">", "less than": "<"}  # fmt: skip
_OP = r"(≥|>=|≤|<=|greater than or equal to|less than or equal to|greater than|less than|>|<|at least|no more than)"
_NUM = r"(\d+(?:\.\d+)?)"
_REACH = 160  # a name this far before its threshold, in the same phrase, is the threshold's measure
_NAMES = {
    "anc": r"absolute neutrophil count|neutrophils?(?: count)?|anc",
    "alc": r"absolute lymphocyte count|lymphocytes?(?: count)?|alc",
    "wbc": r"white blood cells?(?: count)?|leukocytes?(?: count)?|wbc",
    "platelets": r"platelets?(?: count)?|plt",
    "hemoglobin": r"ha?emoglobin|hgb|hb",
    "egfr": r"egfr|estimated glomerular filtration rate",
    "crcl_cg": r"creatinine clearance(?: rate)?|crcl",
    "lvef": r"left ventricular ejection fraction|lvef|ejection fraction",
    "spo2": r"(?:arterial |blood )?oxygen saturation|spo2|sao2",
    "alt": r"alt|alanine aminotransferase",
    "ast": r"ast|aspartate aminotransferase",
    "bilirubin_total": r"total bilirubin|bilirubin|tbil",
    "inr": r"inr|international (?:normali[sz]ed|standardi[sz]ed) ratio",
}
_NAME = re.compile(r"\b(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _NAMES.items()) + r")\b")
_CELLS = r"[×x*]?\s*10\s*\\?(?:\^|e)?\s*[9⁹]\s*/\s*l"
_UNIT = (
    rf"({_CELLS}|g\s*/\s*dl|g\s*/\s*l|mg\s*/\s*dl|ml\s*/\s*min(?:ute)?(?:\s*/\s*1\.73\s*m[2²])?|%|/\s*[uμ]l|/\s*mm3)"
)
_VALUE = re.compile(rf"\\?{_OP}\s*{_NUM}\s*{_UNIT}")
_TIMES_ULN = re.compile(rf"\\?{_OP}\s*{_NUM}\s*(?:×|x|\*|times)\s*(?:the\s+)?(?:uln|upper limit of normal)")
_BREAK = re.compile(r";|\.\s|。")  # a phrase ends here: a name before it is not this threshold's
_UNITS = {"g/dl": "g/dL", "g/l": "g/L", "mg/dl": "mg/dL", "ml/min": "mL/min", "ml/minute": "mL/min", "%": "%",
          "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73m²": "mL/min/{1.73_m2}",
          "ml/minute/1.73m2": "mL/min/{1.73_m2}", "/ul": "/uL", "/μl": "/uL", "/mm3": "/mm3"}  # fmt: skip


def suggest_rule(text: str, mappings: Mappings) -> dict[str, Any] | None:
    """A rule per clear threshold of the bullet (and its age range), checked against the maps; `all` of
    them when there are several, None when nothing is clear."""
    t = text.lower()
    rules = [r for r in (*_thresholds(t), _age(t)) if r is not None and _parses(r, mappings)]
    if not rules:
        return None
    if len(rules) == 1:
        return rules[0]
    # "ANC < 1, or ALC < 0.3, or Hb < 60 g/L" excludes on any one; a list of limits otherwise holds together
    joined = "any" if re.search(r"\bor\b", t) and not re.search(r"\band\b", t) else "all"
    return {joined: rules}


def _parses(rule: dict[str, Any], mappings: Mappings) -> bool:
    try:
        RuleParser(mappings).parse(rule)
    except RuleError:
        return False
    return True


def _thresholds(t: str) -> list[dict[str, Any]]:
    """Lab rules in the order the thresholds stand, one per measure (its first threshold)."""
    names = [(m.end(), m.lastgroup) for m in _NAME.finditer(t)]
    ends = [e for e, _ in names]
    breaks = [m.start() for m in _BREAK.finditer(t)]
    found: list[tuple[int, dict[str, Any]]] = []
    for m in _TIMES_ULN.finditer(t):
        found.append((m.start(), {"op": _OPS[m.group(1)], "uln": float(m.group(2))}))
    for m in _VALUE.finditer(t):
        unit = _unit(m.group(3))
        if unit:
            found.append((m.start(), {"op": _OPS[m.group(1)], "value": float(m.group(2)), "unit": unit}))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for at, limit in sorted(found, key=lambda x: x[0]):
        k = bisect.bisect_right(ends, at) - 1
        if k < 0 or at - ends[k] > _REACH:
            continue
        phrase_break = bisect.bisect_left(breaks, ends[k])
        if phrase_break < len(breaks) and breaks[phrase_break] < at:
            continue  # the nearest name belongs to an earlier phrase
        var = names[k][1]
        if var and var not in seen:
            seen.add(var)
            out.append({"lab": {"var": var, **limit}})
    return out


def _unit(raw: str) -> str | None:
    compact = re.sub(r"\s+", "", raw)
    if re.fullmatch(_CELLS.replace(r"\s*", ""), compact):
        return "10*9/L"
    return _UNITS.get(compact)


def _age(t: str) -> dict[str, Any] | None:
    gap = r"[^.;]{0,160}?"
    m = re.search(rf"\bage[ds]?\b{gap}{_NUM}\s*(?:to|-|–)\s*{_NUM}\s*years", t)
    if m:
        return {"age": {"min": int(float(m.group(1))), "max": int(float(m.group(2)))}}
    m = re.search(rf"\bage[ds]?\b{gap}{_OP}\s*{_NUM}\s*years", t)
    if m:
        op, n = _OPS[m.group(1)], int(float(m.group(2)))
        return {"age": {"min": n} if op in (">=", ">") else {"max": n}}
    return None
