"""The declarative rule vocabulary trials are written in.

A rule is a small tree read from YAML. Leaves test one kind of fact; `all`,
`any`, `not` and `if`/`then` combine them. Every leaf is checked against the
mappings when trials load, so a misspelt variable, group, class or an
unconvertible threshold unit fails at start-up, not silently at a bedside.

Combinators: all, any, not, if/then, any_available (alternative tests of one thing), review,
none_on_record (an absence on a completely read record goes to a person, not unknown).
Leaves live one family per module, each holding its parser and its evaluator side by side, and
register themselves here (see README "Rule vocabulary" for examples):
  demographics.py  age {min, max}; sex female|male
  labs.py          lab {var, op, value, unit, uln, lln, within}; positive {var, within, if_missing};
                   grade_count {vars, grades, min, within}; answer {var, in, within} (the result each
                   reads: lab_results.py)
  conditions.py    condition {groups, within, dated_by, except, except_review, active_only, match_review,
                   onset_before}
  medications.py   medication {classes|ingredients, within, dose, dose_per_kg, if_ongoing, ongoing_note,
                   match_review, route};
                   treated {classes, min_duration, min_distinct}
  doses.py         current_dose {classes, op, value}
  procedures.py    procedure {groups, within, match_review}
  allergies.py     allergy {ingredients|classes, match_review}; allergy {drugs: any, severe, match_review}
Adding a rule kind touches one of those modules (or a new one imported by the package) and its test.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

from cds_service.fhir.mappings import Mappings

if TYPE_CHECKING:
    from cds_service.eligibility.logic import Ctx, Res

OPS = {">=", ">", "<=", "<", "=="}
_WINDOW = re.compile(r"^\s*(more than\s+)?(\d+)\s*(day|week|month|year)s?\s*$")


class RuleError(ValueError):
    """A trial file says something the vocabulary or the mappings do not support."""


def suggest(name: Any, choices: Any) -> str:
    """ "did you mean 'x'?", or the valid choices when there are few, for a name that is not known."""
    choices = sorted(str(c) for c in choices)
    name = str(name)
    # a misspelling, or the name with a word added or dropped ("anc_count" for "anc")
    affix = [c for c in choices if len(c) >= 3 and (name.startswith(c) or c.startswith(name))]
    close = list(dict.fromkeys(affix + difflib.get_close_matches(name, choices, n=3, cutoff=0.6)))[:3]
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if len(choices) <= 8:
        return "choose one of " + ", ".join(choices)
    return ""


def _unknown(what: str, name: Any, choices: Any, fix: str = "") -> RuleError:
    hint = suggest(name, choices)
    return RuleError(f"unknown {what} {name!r}" + (f"; {hint}" if hint else "") + (f" ({fix})" if fix else ""))


@dataclass(frozen=True, slots=True)
class Window:
    """A lookback such as "4 weeks" or "2 months", anchored on the evaluation date. "more than 6 months"
    is strict: exactly 6 months does not meet it (durations such as "a history of more than 6 months")."""

    amount: int
    unit: Literal["day", "week", "month", "year"]
    strict: bool = False

    @classmethod
    def parse(cls, v: Any) -> Window | None:
        if v is None:
            return None
        if isinstance(v, int):
            return cls(v, "day")
        m = _WINDOW.match(str(v))
        if not m:
            raise RuleError(
                f"cannot read window {v!r}: write e.g. '30 days', '1 week', '2 months', '5 years', 'more than 6 months'"
            )
        return cls(int(m.group(2)), m.group(3), bool(m.group(1)))  # type: ignore[arg-type]

    @classmethod
    def lookback(cls, v: Any) -> Window | None:
        """A `within`: how far back from the evaluation date a record counts. "more than" reads only as a
        duration (`onset_before`, `min_duration`); in a lookback it would silently read as the bare window."""
        window = cls.parse(v)
        if window is not None and window.strict:
            raise RuleError(
                f"within {v!r}: a lookback counts back from today; 'more than' is for how long ago a condition"
                " began (onset_before) or how long a drug was taken (min_duration)"
            )
        return window

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
        return f"{'more than ' if self.strict else ''}{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"


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
class NoneOnRecord(Rule):
    """`none_on_record: {rule, review}`: where the inner rule can only say "none on record" (every source
    that could hold it was read, nothing found) and that absence would decide against the patient, a
    person confirms it with the `review` reason, rather than an unknown (an exception to a failing lab:
    "unless anticoagulated", "Gilbert syndrome"). A source not read stays unknown."""

    item: Rule
    reason: str


@dataclass(frozen=True, slots=True)
class Implies(Rule):
    condition: Rule
    then: Rule


def parts(rule: Rule) -> tuple[Rule, ...] | None:
    """The rules a combinator combines (none for a review), or None for a leaf."""
    if isinstance(rule, (All, AnyOf, AnyAvailable)):
        return rule.items
    if isinstance(rule, (Not, NoneOnRecord)):
        return (rule.item,)
    if isinstance(rule, Implies):
        return (rule.condition, rule.then)
    return () if isinstance(rule, ReviewLeaf) else None


# The facts a leaf reads, as `PatientFacts.on_record` names them ("lab:hemoglobin", "condition:sle"), or None
# when it may read anything (age, sex, a calculated variable): see `register`.
Reads = Callable[[Any, Mappings], "frozenset[str] | None"]


@dataclass(frozen=True, slots=True)
class LeafKind:
    """A rule kind: how its YAML is read (and checked against the maps), how it is evaluated, and which facts
    of a record it reads (`reads`; None: any)."""

    parse: Callable[[RuleParser, Any], Rule]
    evaluate: Callable[[Any, Ctx], Res]
    reads: Reads | None = None


LEAVES: dict[str, LeafKind] = {}


def register(
    kind: str,
    parse: Callable[[RuleParser, Any], Rule],
    evaluate: Callable[[Any, Ctx], Res],
    reads: Reads | None = None,
) -> None:
    """Called by each rule-family module (demographics, labs, conditions, medications, procedures, allergies).

    `reads(leaf, mappings)`: every fact the leaf's evaluation can look at, named as `PatientFacts.on_record`
    names them, beyond the sources read (`gathered`, `unread`), which way absence cuts and the date. A record
    holding none of them gets the result a record holding nothing gets, so the engine evaluates such a leaf
    once per screen rather than once per patient (engine.reads_of). Leave it out (None) for a leaf that reads
    anything else (the birth date, the sex); a set that misses a fact the leaf reads would hide what that
    fact says, so tests/test_reads.py holds every declaration to what its leaf evaluates."""
    LEAVES[kind] = LeafKind(parse, evaluate, reads)


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
        combinator = _COMBINATORS.get(kind)
        if combinator is not None:
            return combinator(self, arg)
        leaf = LEAVES.get(kind)
        if leaf is None:
            raise _unknown("rule kind", kind, [*LEAVES, *_COMBINATORS, "if"])
        return leaf.parse(self, arg)

    # --- names a leaf refers to, checked against the maps ---------------------------------------

    def var(self, name: str) -> str:
        if name not in self.mappings.variables:
            raise _unknown("variable", name, self.mappings.variables, "new variables go in mappings/observations.yaml")
        self.variables_used.add(name)
        return name

    def condition_groups(self, names: Any) -> frozenset[str]:
        return self._groups(names, self.mappings.conditions.groups, "condition", "conditions.yaml")

    def procedure_groups(self, names: Any) -> frozenset[str]:
        return self._groups(names, self.mappings.procedures.groups, "procedure", "procedures.yaml")

    def _groups(self, names: Any, known: dict, kind: str, file: str) -> frozenset[str]:
        out = set()
        for g in as_list(names, f"{kind}.groups"):
            if g not in known:
                raise _unknown(f"{kind} group", g, known, f"a new group goes in mappings/{file}")
            out.add(g)
            self.variables_used.add(f"{kind}:{g}")
        return frozenset(out)

    def ingredients(self, arg: dict, where: str) -> tuple[frozenset[str], str]:
        meds = self.mappings.medications
        out: set[str] = set()
        labels = []
        for c in as_list(arg.get("classes", []), "classes"):
            if c not in meds.classes:
                raise _unknown(f"medication class in {where}:", c, meds.classes)
            out |= set(meds.classes[c].members)
            labels.append(meds.classes[c].label.lower())
            self.variables_used.add(f"medication:{c}")
        for i in as_list(arg.get("ingredients", []), "ingredients"):
            if i not in meds.ingredients:
                raise _unknown(f"ingredient in {where}:", i, meds.ingredients)
            out.add(i)
            labels.append(i.replace("_", " "))
            self.variables_used.add(f"medication:{i}")
        if not out:
            raise RuleError(f"{where}: name classes or ingredients")
        return frozenset(out), " or ".join(labels)


def _parse_review(_p: RuleParser, arg: Any) -> Rule:
    if not isinstance(arg, str) or len(arg) < 10:
        raise RuleError("a review leaf is the reason a person must decide (a sentence)")
    return ReviewLeaf("review", arg)


def _parse_none_on_record(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"rule", "review"}, "none_on_record")
    reason = arg.get("review")
    if "rule" not in arg or not isinstance(reason, str) or len(reason) < 10:
        raise RuleError("none_on_record takes the rule and the review reason a person must decide (a sentence)")
    return NoneOnRecord("none_on_record", p.parse(arg["rule"]), reason)


_COMBINATORS: dict[str, Callable[[RuleParser, Any], Rule]] = {
    "all": lambda p, arg: All("all", tuple(p.parse(x) for x in as_list(arg, "all"))),
    "any": lambda p, arg: AnyOf("any", tuple(p.parse(x) for x in as_list(arg, "any"))),
    "any_available": lambda p, arg: AnyAvailable(
        "any_available", tuple(p.parse(x) for x in as_list(arg, "any_available"))
    ),
    "not": lambda p, arg: Not("not", p.parse(arg)),
    "none_on_record": _parse_none_on_record,
    "review": _parse_review,
}


def as_list(v: Any, where: str) -> list:
    if isinstance(v, list):
        return v
    if isinstance(v, (str, int, float)):
        return [v]
    raise RuleError(f"{where}: expected a list")


def check_keys(arg: Any, allowed: set[str], where: str) -> None:
    if not isinstance(arg, dict):
        raise RuleError(f"{where}: expected a mapping")
    extra = sorted(set(arg) - allowed)
    if extra:
        hints = "; ".join(f"'{k}': {suggest(k, allowed)}" for k in extra)
        raise RuleError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; {hints}")
