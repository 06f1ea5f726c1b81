"""The declarative rule vocabulary trials are written in.

A rule is a small tree read from YAML. Leaves test one kind of fact; `all`,
`any`, `not` and `if`/`then` combine them. Every leaf is checked against the
mappings when trials load, so a misspelt variable, group, class or an
unconvertible threshold unit fails at start-up, not silently at a bedside.

Combinators: all, any, not, if/then, any_available (alternative tests of one thing).
Leaves (see README "Rule vocabulary" for examples):
  age:          {min, max}                         years on the evaluation date
  sex:          female | male
  lab:          {var, op, value, unit, uln, lln, within}  threshold; `uln: 3` means 3 x ULN
  positive:     {var, within, if_missing}          qualitative result positive
  grade_count:  {vars, grades, min, within}        e.g. BILAG A in >= 1 organ
  answer:       {var, in, within}                  coded answer (NYHA class, ISN/RPS class)
  condition:    {groups, within, dated_by, except, except_review, active_only, match_review, onset_before}
  medication:   {classes|ingredients, within, dose, if_ongoing, ongoing_note, match_review}
  procedure:    {groups, within, match_review}           a Procedure on record (plasmapheresis, surgery)
  treated:      {classes, min_duration, min_distinct}
  current_dose: {classes, op, value}               current prednisone-equivalent mg/day
  review:       "reason"                           a part of the text only a person can decide
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from cds_service.fhir.mappings import Mappings

OPS = {">=", ">", "<=", "<", "=="}
_WINDOW = re.compile(r"^\s*(\d+)\s*(day|week|month|year)s?\s*$")


class RuleError(ValueError):
    """A trial file says something the vocabulary or the mappings do not support."""


@dataclass(frozen=True, slots=True)
class Window:
    """A lookback such as "4 weeks" or "2 months", anchored on the evaluation date."""

    amount: int
    unit: Literal["day", "week", "month", "year"]

    @classmethod
    def parse(cls, v: Any) -> Window | None:
        if v is None:
            return None
        if isinstance(v, int):
            return cls(v, "day")
        m = _WINDOW.match(str(v))
        if not m:
            raise RuleError(f"cannot read window {v!r}: write e.g. '30 days', '1 week', '2 months', '5 years'")
        return cls(int(m.group(1)), m.group(2))  # type: ignore[arg-type]

    def shift(self, d: date, sign: int) -> date:
        if self.unit == "day":
            return d + timedelta(days=sign * self.amount)
        if self.unit == "week":
            return d + timedelta(weeks=sign * self.amount)
        months = self.amount * (12 if self.unit == "year" else 1) * sign
        y, mth = divmod(d.month - 1 + months, 12)
        year, month = d.year + y, mth + 1
        for day in (d.day, 30, 29, 28):
            try:
                return date(year, month, day)
            except ValueError:
                continue
        raise AssertionError("unreachable")

    def start(self, as_of: date) -> date:
        return self.shift(as_of, -1)

    def end_after(self, d: date) -> date:
        return self.shift(d, +1)

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str


@dataclass(frozen=True, slots=True)
class All(Rule):
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf(Rule):
    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyAvailable(Rule):
    """Alternative tests for one thing (HBV DNA in IU/mL, copies/mL or qualitative): decide on
    the ones on record, UNKNOWN only when none is."""

    items: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class ReviewLeaf(Rule):
    reason: str


@dataclass(frozen=True, slots=True)
class Not(Rule):
    item: Rule


@dataclass(frozen=True, slots=True)
class Implies(Rule):
    condition: Rule
    then: Rule


@dataclass(frozen=True, slots=True)
class Age(Rule):
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Sex(Rule):
    sex: str


@dataclass(frozen=True, slots=True)
class Lab(Rule):
    var: str
    op: str
    value: float | None  # canonical unit
    uln: float | None  # multiple of the upper limit of normal
    lln: float | None  # multiple of the lower limit of normal
    within: Window | None
    text: str  # threshold as written, for explanations


@dataclass(frozen=True, slots=True)
class Positive(Rule):
    var: str
    within: Window | None
    missing_is_absent: bool  # a screening test whose absence reads like an absent diagnosis


@dataclass(frozen=True, slots=True)
class GradeCount(Rule):
    vars: tuple[str, ...]
    grades: frozenset[str]
    min: int
    within: Window | None


@dataclass(frozen=True, slots=True)
class Answer(Rule):
    var: str
    values: frozenset[str]
    within: Window | None


@dataclass(frozen=True, slots=True)
class ConditionRule(Rule):
    groups: frozenset[str]
    within: Window | None
    except_groups: frozenset[str]
    except_review: str | None
    active_only: bool  # only a current (active) diagnosis counts, e.g. pregnancy
    match_review: str | None  # a match needs a person (severity, scope), never a definite TRUE
    onset_before: Window | None  # diagnosed at least this long ago
    by_diagnosis: bool  # `within` counts from the diagnosis date, not from the last day the condition was present


@dataclass(frozen=True, slots=True)
class MedicationRule(Rule):
    ingredients: frozenset[str]
    label: str
    within: Window | None
    dose_op: str | None
    dose_value: float | None
    if_ongoing: Literal["match", "review"]
    ongoing_note: str | None
    match_review: str | None = None  # a match needs a person (e.g. a vaccine of unrecorded type)


@dataclass(frozen=True, slots=True)
class ProcedureRule(Rule):
    groups: frozenset[str]
    within: Window | None
    match_review: str | None


@dataclass(frozen=True, slots=True)
class Treated(Rule):
    ingredients: frozenset[str]
    label: str
    min_duration: Window | None
    min_distinct: int


@dataclass(frozen=True, slots=True)
class CurrentDose(Rule):
    ingredients: frozenset[str]
    label: str
    op: str
    value: float


@dataclass(slots=True)
class RuleParser:
    """Parses rule YAML into `Rule` trees, validating names against the mappings."""

    mappings: Mappings
    variables_used: set[str] = field(default_factory=set)

    def parse(self, node: Any) -> Rule:
        if not isinstance(node, dict) or not node:
            raise RuleError(f"a rule is a mapping with one key, got {node!r}")
        if "if" in node:
            if set(node) != {"if", "then"}:
                raise RuleError("an implication has exactly the keys 'if' and 'then'")
            return Implies("if", self.parse(node["if"]), self.parse(node["then"]))
        if len(node) != 1:
            raise RuleError(f"a rule has one key, got {sorted(node)}")
        ((kind, arg),) = node.items()
        method = getattr(self, f"_p_{kind}", None)
        if method is None:
            raise RuleError(f"unknown rule kind {kind!r}")
        return method(arg)

    # combinators
    def _p_all(self, arg: Any) -> Rule:
        return All("all", tuple(self.parse(x) for x in _list(arg, "all")))

    def _p_any(self, arg: Any) -> Rule:
        return AnyOf("any", tuple(self.parse(x) for x in _list(arg, "any")))

    def _p_any_available(self, arg: Any) -> Rule:
        return AnyAvailable("any_available", tuple(self.parse(x) for x in _list(arg, "any_available")))

    def _p_not(self, arg: Any) -> Rule:
        return Not("not", self.parse(arg))

    def _p_review(self, arg: Any) -> Rule:
        if not isinstance(arg, str) or len(arg) < 10:
            raise RuleError("a review leaf is the reason a person must decide (a sentence)")
        return ReviewLeaf("review", arg)

    # leaves
    def _p_age(self, arg: dict) -> Rule:
        _keys(arg, {"min", "max"}, "age")
        self.variables_used.add("age")
        return Age("age", arg.get("min"), arg.get("max"))

    def _p_sex(self, arg: Any) -> Rule:
        if arg not in ("female", "male"):
            raise RuleError("sex is 'female' or 'male'")
        self.variables_used.add("sex")
        return Sex("sex", arg)

    def _var(self, name: str) -> str:
        if name not in self.mappings.variables:
            raise RuleError(f"unknown variable {name!r} (add it to mappings/observations.yaml)")
        self.variables_used.add(name)
        return name

    def _p_lab(self, arg: dict) -> Rule:
        _keys(arg, {"var", "op", "value", "unit", "uln", "lln", "within"}, "lab")
        var = self.mappings.variables[self._var(arg["var"])]
        op = arg.get("op")
        if op not in OPS:
            raise RuleError(f"lab {var.key}: op must be one of {sorted(OPS)}")
        if var.derived:
            self.variables_used.update(_DERIVED_INPUTS[var.derived])
        for limit in ("uln", "lln"):
            if limit in arg:
                if "value" in arg or len({"uln", "lln"} & set(arg)) > 1:
                    raise RuleError(f"lab {var.key}: give one of value+unit, uln or lln")
                mult = float(arg[limit])
                return Lab(
                    "lab",
                    var.key,
                    op,
                    None,
                    mult if limit == "uln" else None,
                    mult if limit == "lln" else None,
                    Window.parse(arg.get("within")),
                    f"{op} {arg[limit]} x {limit.upper()}",
                )
        if "value" not in arg or "unit" not in arg:
            raise RuleError(f"lab {var.key}: a threshold needs value and unit")
        factor = var.factor(arg["unit"])
        if factor is None:
            raise RuleError(f"lab {var.key}: unit {arg['unit']!r} is not convertible to {var.unit}")
        return Lab(
            "lab",
            var.key,
            op,
            float(arg["value"]) * factor,
            None,
            None,
            Window.parse(arg.get("within")),
            f"{op} {arg['value']} {arg['unit']}",
        )

    def _p_positive(self, arg: dict) -> Rule:
        _keys(arg, {"var", "within", "if_missing"}, "positive")
        if arg.get("if_missing", "unknown") not in ("unknown", "absent"):
            raise RuleError("positive.if_missing is 'unknown' (default) or 'absent'")
        return Positive(
            "positive", self._var(arg["var"]), Window.parse(arg.get("within")), arg.get("if_missing") == "absent"
        )

    def _p_grade_count(self, arg: dict) -> Rule:
        _keys(arg, {"vars", "grades", "min", "within"}, "grade_count")
        names: list[str] = []
        for pattern in _list(arg["vars"], "grade_count.vars"):
            if pattern.endswith("*"):
                hits = sorted(k for k in self.mappings.variables if k.startswith(pattern[:-1]))
                if not hits:
                    raise RuleError(f"grade_count: {pattern!r} matches no variable")
                names.extend(hits)
            else:
                names.append(pattern)
        return GradeCount(
            "grade_count",
            tuple(self._var(n) for n in names),
            frozenset(str(g) for g in _list(arg["grades"], "grades")),
            int(arg.get("min", 1)),
            Window.parse(arg.get("within")),
        )

    def _p_answer(self, arg: dict) -> Rule:
        _keys(arg, {"var", "in", "within"}, "answer")
        return Answer(
            "answer",
            self._var(arg["var"]),
            frozenset(str(v) for v in _list(arg["in"], "in")),
            Window.parse(arg.get("within")),
        )

    def _groups(self, names: Any) -> frozenset[str]:
        out = set()
        for g in _list(names, "groups"):
            if g not in self.mappings.conditions.groups:
                raise RuleError(f"unknown condition group {g!r} (add it to mappings/conditions.yaml)")
            out.add(g)
            self.variables_used.add(f"condition:{g}")
        return frozenset(out)

    def _p_condition(self, arg: dict) -> Rule:
        _keys(
            arg,
            {"groups", "within", "dated_by", "except", "except_review", "active_only", "match_review", "onset_before"},
            "condition",
        )
        if arg.get("dated_by", "presence") not in ("presence", "diagnosis"):
            raise RuleError("condition.dated_by is 'presence' (default: present within the window) or 'diagnosis'")
        exc = self._groups(arg["except"]) if "except" in arg else frozenset()
        if exc and not arg.get("except_review"):
            raise RuleError("condition: 'except' needs 'except_review' saying what a person must confirm")
        return ConditionRule(
            "condition",
            self._groups(arg["groups"]),
            Window.parse(arg.get("within")),
            exc,
            arg.get("except_review"),
            bool(arg.get("active_only", False)),
            arg.get("match_review"),
            Window.parse(arg.get("onset_before")),
            arg.get("dated_by") == "diagnosis",
        )

    def _ingredients(self, arg: dict, where: str) -> tuple[frozenset[str], str]:
        meds = self.mappings.medications
        out: set[str] = set()
        labels = []
        for c in _list(arg.get("classes", []), "classes"):
            if c not in meds.classes:
                raise RuleError(f"{where}: unknown medication class {c!r}")
            out |= set(meds.classes[c].members)
            labels.append(meds.classes[c].label.lower())
            self.variables_used.add(f"medication:{c}")
        for i in _list(arg.get("ingredients", []), "ingredients"):
            if i not in meds.ingredients:
                raise RuleError(f"{where}: unknown ingredient {i!r}")
            out.add(i)
            labels.append(i.replace("_", " "))
            self.variables_used.add(f"medication:{i}")
        if not out:
            raise RuleError(f"{where}: name classes or ingredients")
        return frozenset(out), " or ".join(labels)

    def _p_medication(self, arg: dict) -> Rule:
        _keys(
            arg,
            {"classes", "ingredients", "within", "dose", "if_ongoing", "ongoing_note", "match_review"},
            "medication",
        )
        ings, label = self._ingredients(arg, "medication")
        dose = arg.get("dose") or {}
        if dose and (dose.get("op") not in OPS or "value" not in dose):
            raise RuleError("medication.dose needs op and value (mg/day, prednisone-equivalent for glucocorticoids)")
        if_ongoing = arg.get("if_ongoing", "match")
        if if_ongoing not in ("match", "review"):
            raise RuleError("medication.if_ongoing is 'match' or 'review'")
        return MedicationRule(
            "medication",
            ings,
            label,
            Window.parse(arg.get("within")),
            dose.get("op"),
            float(dose["value"]) if dose else None,
            if_ongoing,
            arg.get("ongoing_note"),
            arg.get("match_review"),
        )

    def _p_procedure(self, arg: dict) -> Rule:
        _keys(arg, {"groups", "within", "match_review"}, "procedure")
        groups = set()
        for g in _list(arg["groups"], "procedure.groups"):
            if g not in self.mappings.procedures.groups:
                raise RuleError(f"unknown procedure group {g!r} (add it to mappings/procedures.yaml)")
            groups.add(g)
            self.variables_used.add(f"procedure:{g}")
        return ProcedureRule("procedure", frozenset(groups), Window.parse(arg.get("within")), arg.get("match_review"))

    def _p_treated(self, arg: dict) -> Rule:
        _keys(arg, {"classes", "ingredients", "min_duration", "min_distinct"}, "treated")
        ings, label = self._ingredients(arg, "treated")
        return Treated("treated", ings, label, Window.parse(arg.get("min_duration")), int(arg.get("min_distinct", 1)))

    def _p_current_dose(self, arg: dict) -> Rule:
        _keys(arg, {"classes", "ingredients", "op", "value"}, "current_dose")
        ings, label = self._ingredients(arg, "current_dose")
        if arg.get("op") not in OPS:
            raise RuleError("current_dose needs op")
        return CurrentDose("current_dose", ings, label, arg["op"], float(arg["value"]))


_DERIVED_INPUTS = {
    "cockcroft_gault": ("creatinine", "weight", "age", "sex"),
    "ckd_epi_2021": ("creatinine", "age", "sex"),
}


def _list(v: Any, where: str) -> list:
    if isinstance(v, list):
        return v
    if isinstance(v, (str, int, float)):
        return [v]
    raise RuleError(f"{where}: expected a list")


def _keys(arg: Any, allowed: set[str], where: str) -> None:
    if not isinstance(arg, dict):
        raise RuleError(f"{where}: expected a mapping")
    extra = set(arg) - allowed
    if extra:
        raise RuleError(f"{where}: unknown keys {sorted(extra)}; allowed {sorted(allowed)}")
