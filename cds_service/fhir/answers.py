"""Reading coded answers (NYHA class, ISN/RPS class, BILAG grade) the way EHRs send them.

A class arrives as a code, as "IV", as "Class IV-G (A/C)", "III/V" or "IV + V". A value this
module cannot read is never guessed: the caller records it as a problem, so the criterion is
`unknown` with the value quoted for a reviewer, never a definite fail.
"""

from __future__ import annotations

import re

from cds_service.fhir.map_models import Variable

_ROMAN = ("VI", "IV", "V", "III", "II", "I")
_TOKEN = re.compile(r"[A-Z]+")


def roman_classes(text: str) -> str | None:
    """'Class IV-G (A/C)' -> 'IV'; 'III/V' -> 'III+V'; None when no class numeral is written."""
    found: list[str] = []
    for token in _TOKEN.findall(text.upper()):
        if token in _ROMAN and token not in found:
            found.append(token)
    return "+".join(found) if found else None


def coded_answer(var: Variable, text: str) -> str | None:
    """The canonical answer for a code or text, or None when it is not recognised."""
    s = text.strip()
    if s in var.answers:
        return var.answers[s]
    if var.kind == "grade":
        return s.upper() if s.upper() in ("A", "B", "C", "D", "E") else None
    if var.answers and all(re.fullmatch(r"[IV+]+", v) for v in var.answers.values()):
        parsed = roman_classes(s)
        return var.answers.get(parsed) if parsed else None
    return None
