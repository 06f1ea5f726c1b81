"""Reading AllergyIntolerance: which drugs a recorded allergy or intolerance names, with its statuses.

The substance is read from `code` and every `reaction.substance`, by the codes of
mappings/medications.yaml (RxNorm, ATC, CVX), else by the drug names in their text and displays, negation
first ("No known drug allergies", "no allergy to cyclophosphamide" name nothing). Refuted and
entered-in-error records are dropped; whether a record is current (clinicalStatus) or confirmed
(verificationStatus) is kept for the criterion to weigh. A record whose substance cannot be read at all
(no text, no code in a system the maps know) keeps AllergyIntolerance from saying "none on record".
"""

from __future__ import annotations

from typing import Any

from cds_service.fhir.facts import AllergyFact, PatientFacts
from cds_service.fhir.medications import _known_code
from cds_service.fhir.read import Reader, _cc_all_text, _cc_text, _codings, _d, _l, _o, _s

_SEVERITY = {"mild": 1, "moderate": 2, "severe": 3}


class AllergyReader(Reader):
    def _allergy(self, res: dict, facts: PatientFacts) -> None:
        verification = _first_code(res.get("verificationStatus"))
        if verification in ("refuted", "entered-in-error"):
            return
        concepts = [res.get("code")] + [_o(r).get("substance") for r in _l(res.get("reaction"))]
        concepts = [c for c in concepts if c is not None]
        named: set[str] = set()
        doubtful: set[str] = set()
        readable = False
        for cc in concepts:
            by_code = {k for system, code, _ in _codings(cc) if (k := self.m.ingredient_for_code(system, code))}
            named |= by_code
            text = _cc_all_text(cc)
            if not by_code and text:
                found, unsure = self.m.ingredients_in_text(text)
                named |= found
                doubtful |= unsure
            readable = readable or bool(by_code or text or _known_code(cc))
        if not readable:  # nothing here can be read: this allergy might be to any drug
            facts.unread["AllergyIntolerance"] = facts.unread.get("AllergyIntolerance", 0) + 1
            return
        if not self._valid(res, facts):
            return
        severities = [_s(_o(r).get("severity")) for r in _l(res.get("reaction"))]
        worst = max((s for s in severities if s in _SEVERITY), key=_SEVERITY.__getitem__, default=None)
        facts.allergies.append(
            AllergyFact(
                ingredients=frozenset(named),
                resource=f"AllergyIntolerance/{_s(res.get('id'))}",
                display=_cc_text(res.get("code")) or ", ".join(sorted(named)).replace("_", " ") or "allergy",
                clinical=_first_code(res.get("clinicalStatus")),
                verification=verification,
                type=_s(res.get("type")),
                criticality=_s(res.get("criticality")),
                severity=worst,
                recorded=_d(res.get("recordedDate")) or _d(res.get("onsetDateTime")),
                doubtful=frozenset(doubtful - named),
            )
        )


def _first_code(cc: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus), None when absent."""
    return next((c for _, c, _ in _codings(cc) if c), None)
