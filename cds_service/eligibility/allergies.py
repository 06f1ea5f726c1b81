"""Rule family: allergies and intolerances on record (allergy), read from AllergyIntolerance.

  allergy {ingredients|classes, severe, history, match_review}  an allergy to one of these drugs
  allergy {any: drug|substance, severe, history, match_review}  an allergy to any drug, or to anything

A current (clinicalStatus active), confirmed allergy (type allergy) to a named drug is TRUE; one recorded
unconfirmed or presumed or without a verification status, as an intolerance or without a type, without a
clinical status, or whose text says more than the drug's name ("cyclophosphamide: none", "possible fludarabine
allergy") goes to a person, and so does every match under `match_review` (a criterion that needs judgement:
"severe"). Inactive and resolved ones are not current: shown, never counted, unless `history: true` (a
"history of" criterion). `severe: true` leaves out allergies recorded as not severe (low criticality, or only
mild or moderate reactions); one with no severity recorded may be severe. A status this service does not know
is unknown. "None on record" needs AllergyIntolerance read completely, with every record's substance
readable; otherwise the leaf is unknown, never absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cds_service.eligibility.logic import Ctx, Res, Truth
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import Rule, RuleError, RuleParser, check_keys, register
from cds_service.fhir.facts import AllergyFact

SOURCE = "AllergyIntolerance"
SOURCE_NAME = "allergies (AllergyIntolerance)"
_NOT_CURRENT = ("inactive", "resolved")
_DRUG_CATEGORIES = frozenset({"medication", "biologic"})


@dataclass(frozen=True, slots=True)
class AllergyRule(Rule):
    ingredients: frozenset[str] | None  # None: any drug, or anything (`substance`)
    label: str
    severe: bool
    history: bool
    match_review: str | None
    substance: bool = False  # `any: substance`: food, environment, insect stings too


def parse_allergy(p: RuleParser, arg: Any) -> Rule:
    check_keys(arg, {"ingredients", "classes", "any", "severe", "history", "match_review"}, "allergy")
    review = arg.get("match_review")
    if review is not None and (not isinstance(review, str) or len(review) < 10):
        raise RuleError("allergy.match_review is the reason a person must decide (a sentence)")
    for flag in ("severe", "history"):
        if not isinstance(arg.get(flag, False), bool):
            raise RuleError(f"allergy.{flag} is true or false")
    severe, history = bool(arg.get("severe")), bool(arg.get("history"))
    if "any" in arg:
        if arg["any"] not in ("drug", "substance") or "ingredients" in arg or "classes" in arg:
            raise RuleError("allergy: write either 'any: drug' (or 'any: substance') or the ingredients or classes")
        label = "any drug" if arg["any"] == "drug" else "any substance"
        return AllergyRule("allergy", None, label, severe, history, review, substance=arg["any"] == "substance")
    ingredients, label = p.ingredients(arg, "allergy")
    return AllergyRule("allergy", ingredients, label, severe, history, review)


def _concerns(rule: AllergyRule, a: AllergyFact) -> bool:
    if rule.substance:
        return True
    if rule.ingredients is None:  # a drug, by its category or by the drug it names; no category: may be one
        return bool(a.ingredients or a.doubtful or a.categories & _DRUG_CATEGORIES or not a.categories)
    return bool((a.ingredients | a.doubtful) & rule.ingredients)


def _not_severe(a: AllergyFact) -> bool:
    """Recorded as not severe: low criticality or only mild or moderate reactions, and nothing worse."""
    if a.criticality == "high" or a.severity == "severe":
        return False
    return a.criticality == "low" or a.severity in ("mild", "moderate")


def _note(a: AllergyFact) -> str:
    parts = [a.type or "allergy or intolerance", a.clinical or "clinical status not recorded"]
    parts += [x for x in (a.verification, a.criticality and f"criticality {a.criticality}", a.severity) if x]
    return ", ".join(parts)


def _unrecognised(a: AllergyFact) -> str | None:
    """A status or type this service does not know: what it is, so the criterion says why it is unknown."""
    if a.clinical not in (None, "active", *_NOT_CURRENT):
        return f"clinical status {a.clinical!r}"
    if a.verification not in (None, "confirmed", "unconfirmed", "presumed"):
        return f"verification status {a.verification!r}"
    if a.type not in (None, "allergy", "intolerance"):
        return f"type {a.type!r}"
    return None


def evaluate_allergy(rule: AllergyRule, ctx: Ctx) -> Res:
    hits: list[Res] = []
    review: list[Res] = []
    unknown: list[Res] = []
    past: list[Evidence] = []
    for a in ctx.facts.allergies:
        if not _concerns(rule, a):
            continue
        ev = Evidence(resource=a.resource, label=a.display, date=a.recorded, note=_note(a))
        odd = _unrecognised(a)
        if odd:
            unknown.append(Res(Truth.UNKNOWN, evidence=[ev], missing=[f"{a.display}: {odd} not recognised"]))
        elif (a.clinical in _NOT_CURRENT and not rule.history) or (rule.severe and _not_severe(a)):
            past.append(ev)
        elif why := _doubt(rule, a):
            review.append(Res(Truth.REVIEW, evidence=[ev], notes=[f"{a.display}: {why}"]))
        else:
            hits.append(Res(Truth.TRUE, evidence=[ev], why=[f"allergy to {a.display} on record"]))
    if hits:
        return Res(Truth.TRUE).merge(hits)
    if review:
        return Res(Truth.REVIEW).merge(review)
    if unknown:
        return Res(Truth.UNKNOWN).merge(unknown)
    what = f"{'severe ' if rule.severe else ''}allergy to {rule.label}"
    current = "" if rule.history else "current "
    article = "a " if rule.severe else "an "
    if SOURCE not in ctx.facts.gathered:
        return Res(Truth.UNKNOWN, missing=[f"{SOURCE_NAME} not read, so {article}{what} cannot be ruled out"])
    unread = ctx.facts.unread.get(SOURCE, 0)
    if unread:
        why = f"{unread} of the {SOURCE_NAME} could not be identified (not valid FHIR, or no substance)"
        return Res(Truth.UNKNOWN, missing=[why])
    shown = "; not current or recorded as not severe: " + ", ".join(e.label for e in past) if past else ""
    if ctx.absent == Truth.FALSE:
        return Res(Truth.FALSE, evidence=past, why=[f"no {current}{what} on record{shown}"])
    return Res(Truth.UNKNOWN, evidence=past, missing=[f"{what}: none on record"])


def _doubt(rule: AllergyRule, a: AllergyFact) -> str | None:
    """Why a person must read this record rather than count it, or None when it counts."""
    named = a.ingredients & rule.ingredients if rule.ingredients is not None else a.ingredients or not a.doubtful
    if not named:
        return "the text says more than the drug's name (a negation or a qualifier after it); a person reads it"
    if a.clinical is None and not rule.history:
        return "clinical status not recorded"
    if a.verification in ("unconfirmed", "presumed"):
        return f"recorded {a.verification}"
    if a.verification is None:
        return "verification status not recorded: whether the allergy was confirmed"
    if a.type is None:
        return "not recorded as an allergy or an intolerance: whether it is a hypersensitivity"
    if a.type == "intolerance":
        return "recorded as an intolerance, not an allergy: whether it is a hypersensitivity or a contraindication"
    if rule.ingredients is None and not rule.substance and not a.ingredients and not a.categories:
        return "no category recorded: whether it is a drug allergy"
    if rule.match_review:
        return rule.match_review
    return None


def allergy_reads(rule: AllergyRule, _m: object) -> frozenset[str]:
    """The allergies naming one of its drugs (as `_concerns` reads them); any allergy for `any`."""
    if rule.ingredients is None:
        return frozenset({"allergy:*"})
    return frozenset(f"allergy:{i}" for i in rule.ingredients)


register("allergy", parse_allergy, evaluate_allergy, allergy_reads)
