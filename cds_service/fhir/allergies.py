"""Reading AllergyIntolerance: which drugs a recorded allergy or intolerance names, with its statuses.

The substance is read from `code` and every `reaction.substance`, by the codes of
mappings/medications.yaml (RxNorm, ATC, CVX), else by the drug names in their text and displays, negation
first ("no allergy to cyclophosphamide" names nothing; "No known drug allergies", NKDA and the "no known
allergy" SNOMED CT concepts are no allergy at all). Refuted and entered-in-error records are dropped;
whether a record is current (clinicalStatus), confirmed (verificationStatus), an allergy or an intolerance,
and how severe, is kept for the criterion to weigh. SNOMED CT substance codes are not mapped: they are read
by their display. A record whose substance can be read neither by a mapped code nor by text keeps
AllergyIntolerance from saying "none on record".
"""

from __future__ import annotations

import re
from typing import Any

from cds_service.fhir.codes import SNOMED
from cds_service.fhir.facts import AllergyFact, PatientFacts
from cds_service.fhir.read import Reader, _cc_all_text, _cc_text, _codings, _d, _l, _o, _s

_SEVERITY = {"mild": 1, "moderate": 2, "severe": 3}
# what may stand beside a drug's name in an allergy's text without changing what it says
_PLAIN_WORDS = frozenset({"allergy", "allergies", "allergic", "to", "hypersensitivity", "drug", "and", "or",
                          "phosphate", "sodium", "hydrochloride", "hcl", "citrate", "sulfate", "acetate"})  # fmt: skip
# "No known drug allergies", "None known", "Denies allergies": a record that states there is none
_STATES_NONE = re.compile(r"^\W*(no|none|nil|denies|denied|negative)\b")


class AllergyReader(Reader):
    def _allergy(self, res: dict, facts: PatientFacts) -> None:
        """One AllergyIntolerance. One with an element of the wrong type raises Invalid: skipped, reported and
        counted unread by the normaliser, as any resource is (it might be to any drug)."""
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
                if found and self._says_more(text):  # "Cyclophosphamide: none", "possible fludarabine allergy"
                    found, unsure = frozenset(), unsure | found
                named |= found
                doubtful |= unsure
            # a code alone that maps to no drug could still be one of the criteria's (a SNOMED CT substance, an
            # RxNorm product the maps do not roll up): only text or a mapped code makes the record readable
            readable = readable or bool(by_code or text)
        if not named and not doubtful and self._states_none(res.get("code")):
            return  # "no known allergy": never an allergy, and not a record that could not be read
        if not readable:  # nothing here can be read: this allergy might be to any drug
            facts.unread["AllergyIntolerance"] = facts.unread.get("AllergyIntolerance", 0) + 1
            return
        if not self._valid(res, facts):  # strict mode: skipped and reported, and not "none on record" either
            facts.unread["AllergyIntolerance"] = facts.unread.get("AllergyIntolerance", 0) + 1
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
                categories=frozenset(c for c in map(_s, _l(res.get("category"))) if c),
                recorded=_d(res.get("recordedDate")) or _d(res.get("onsetDateTime")),
                doubtful=frozenset(doubtful - named),
            )
        )

    def _says_more(self, text: str) -> bool:
        """Words beside the drug's name other than "allergy (to)": they may negate or qualify it ("none",
        "denies", "side effect, not allergy", "suspected"), so the record is for a person to read."""
        t = " ".join(text.lower().split())
        rest = self.m.name_pattern.sub(" ", t) if self.m.name_pattern else t
        return bool(set(re.findall(r"[a-z0-9]+", rest)) - _PLAIN_WORDS)

    def _states_none(self, code: Any) -> bool:
        if any(system == SNOMED and c in self.m.no_allergy_snomed for system, c, _ in _codings(code)):
            return True
        text = _cc_all_text(code).lower()
        words = set(re.findall(r"[a-z]+", text))
        return bool(_STATES_NONE.match(text) or words & set(self.m.no_allergy_words))


def _first_code(cc: Any) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus), None when absent."""
    return next((c for _, c, _ in _codings(cc) if c), None)
