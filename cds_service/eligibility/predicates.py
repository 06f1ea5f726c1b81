"""Rule family: named predicates (`{predicate: active_hepatitis_b}`), defined once in
mappings/predicates.yaml. A predicate compiles to its rule tree where it is used, so it is evaluated
exactly as if written out, and a fix to its definition reaches every trial that names it."""

from __future__ import annotations

from typing import Any

from cds_service.eligibility.logic import Ctx, Res
from cds_service.eligibility.rules import Rule, RuleError, RuleParser, register, suggest

_EXPANDING: list[str] = []  # predicates being compiled, to refuse a definition that names itself


def parse_predicate(p: RuleParser, arg: Any) -> Rule:
    name = str(arg)
    known = p.mappings.predicates
    if name not in known:
        hint = suggest(name, known)
        raise RuleError(
            f"unknown predicate {name!r}" + (f"; {hint}" if hint else "") + " (see mappings/predicates.yaml)"
        )
    if name in _EXPANDING:
        raise RuleError(f"predicate {name!r} refers to itself through {' -> '.join(_EXPANDING)}")
    _EXPANDING.append(name)
    try:
        p.variables_used.add(f"predicate:{name}")
        return p.parse(known[name].rule)
    except RuleError as e:
        raise RuleError(f"in predicate {name!r}: {e}") from e
    finally:
        _EXPANDING.pop()


def evaluate_predicate(rule: Rule, ctx: Ctx) -> Res:  # pragma: no cover - predicates compile to their rule
    raise AssertionError("a predicate is compiled into its rule tree and never evaluated as such")


register("predicate", parse_predicate, evaluate_predicate)
