"""Clinical sense of a trial file's numbers and codes, checked against the maps.

A rule can parse and still hide every patient: `hemoglobin >= 80 g/dL` (meant g/L) fails everyone, an
ISN/RPS class written `3` (meant III) or a BILAG grade written `a` (meant A) matches no one. Those are
lint errors here, each naming the fix: the unit of the variable's own unit list that makes the number
plausible (`plausible` in mappings/observations.yaml), or the answer the variable knows.

The walk runs over the YAML nodes beside the data, so every message carries the line of the value.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterator
from typing import Any

import yaml

from cds_service.fhir.answers import coded_answer
from cds_service.fhir.map_models import Variable
from cds_service.fhir.mappings import Mappings

_COMBINATORS = {"all", "any", "any_available"}
_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}


def leaves(data: Any, node: Any) -> Iterator[tuple[str, Any, Any]]:
    """(kind, argument, argument's YAML node) of every leaf of a rule tree, through every combinator."""
    if not isinstance(data, dict):
        return
    if "if" in data:
        for key in ("if", "then"):
            yield from leaves(data.get(key), child(node, key))
        return
    for kind, arg in data.items():
        sub = child(node, kind)
        if kind in _COMBINATORS and isinstance(arg, list):
            for i, item in enumerate(arg):
                yield from leaves(item, child(sub, i))
        elif kind == "not":
            yield from leaves(arg, sub)
        elif kind == "none_on_record" and isinstance(arg, dict):
            yield from leaves(arg.get("rule"), child(sub, "rule"))
        else:
            yield kind, arg, sub


def child(node: Any, key: str | int) -> Any:
    """The YAML node under a mapping key or a sequence index (None when absent)."""
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        return next((v for k, v in node.value if k.value == key), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


def line_of(node: Any, fallback: int) -> int:
    return node.start_mark.line + 1 if node is not None else fallback


def rule_problems(rule: Any, node: Any, mappings: Mappings) -> list[tuple[int, str]]:
    """(line, message) for each threshold or coded answer in a parsed rule that no patient could have."""
    fallback = line_of(node, 1)
    out: list[tuple[int, str]] = []
    for kind, arg, arg_node in leaves(rule, node):
        if not isinstance(arg, dict):
            continue
        if kind == "lab" and "value" in arg and "unit" in arg:
            msg = implausible_threshold(mappings.variables[arg["var"]], arg["value"], str(arg["unit"]))
            if msg:
                out.append((line_of(child(arg_node, "value"), fallback), msg))
        elif kind == "answer":
            out += _answers(mappings.variables[arg["var"]], arg.get("in"), child(arg_node, "in"), fallback)
        elif kind == "grade_count":
            names = [n for n in _list(arg.get("vars")) if isinstance(n, str)]
            first = next((k for n in names for k in mappings.variables if k.startswith(n.rstrip("*"))), None)
            if first is not None:
                out += _answers(mappings.variables[first], arg.get("grades"), child(arg_node, "grades"), fallback)
    return out


def implausible_threshold(var: Variable, value: Any, unit: str) -> str | None:
    """Why `value unit` is no plausible result of `var`, with the unit that would make it one; None if fine."""
    factor = var.factor(unit)
    if var.plausible is None or factor is None or not isinstance(value, (int, float)):
        return None
    lo, hi = var.plausible.min, var.plausible.max
    if lo <= value * factor <= hi:
        return None
    seen: set[float] = {factor}
    likely = []
    for other, f in var.units.items():
        if f not in seen and lo <= value * f <= hi and other.strip():
            likely.append(other)
        seen.add(f)
    hint = f"; did you mean {value:g} {likely[0]}?" if likely else ""
    return (
        f"{value:g} {unit} is not a plausible {_noun(var.label)}{hint} "
        f"(plausible: {lo:g} to {hi:g} {var.unit}, mappings/observations.yaml)"
    )


def known_answers(var: Variable) -> list[str]:
    """The canonical answers a coded or graded variable can hold: its `answers`, or for grades the letters
    the answer reader accepts (probed from it, so the two can never disagree)."""
    if var.kind == "grade":
        return [c for c in string.ascii_uppercase if coded_answer(var, c) == c]
    return list(dict.fromkeys(var.answers.values()))


def _answers(var: Variable, values: Any, node: Any, fallback: int) -> list[tuple[int, str]]:
    known = known_answers(var)
    if not known:
        return []
    out = []
    for i, v in enumerate(_list(values)):
        s = str(v)
        if s in known:
            continue
        hint = answer_hint(s, known)
        what = "grade" if var.kind == "grade" else "answer"
        message = f"{s} is not a {var.label} {what} ({', '.join(known)})" + (f"; did you mean {hint}?" if hint else "")
        out.append((line_of(child(node, i), fallback), message))
    return out


def answer_hint(value: str, known: list[str]) -> str | None:
    """The answer meant: the same letters in another case ("a" -> "A"), a class as a number ("3" -> "III",
    "4+5" -> "IV+V"), or a close spelling."""
    upper = {k.upper(): k for k in known}
    if value.upper() in upper:
        return upper[value.upper()]
    roman = re.sub(r"\d+", lambda m: _ROMAN.get(int(m.group()), m.group()), value).replace("/", "+").replace(" ", "")
    if roman.upper() in upper:
        return upper[roman.upper()]
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unranged(variables: set[str], mappings: Mappings) -> list[str]:
    """Quantity variables a trial compares with a number whose map states no plausible range."""
    return sorted(
        v
        for v in variables
        if v in mappings.variables
        and mappings.variables[v].kind == "quantity"
        and mappings.variables[v].plausible is None
    )


def _list(v: Any) -> list:
    if isinstance(v, list):
        return v
    return [] if v is None else [v]


def _noun(label: str) -> str:
    """'Hemoglobin' reads 'hemoglobin' mid-sentence; 'eGFR (CKD-EPI)' and 'INR' keep their case."""
    return label[0].lower() + label[1:] if label[1:2].islower() else label
