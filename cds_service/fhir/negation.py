"""Negation is read before any positive word: "no SLE", "ruled out lupus", "negative for HIV".

A phrase found in free text counts only when no negation cue stands before it in the same clause
(a clause ends at `.`, `;`, `,`, `:` or a line break, as in NegEx's scope). The cues are the
pre-negation triggers of NegEx (Chapman et al., 2001) that problem lists and lab comments use.
Text that negates is never read as present; whether it proves absence is the caller's question.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

_CUES = (
    "no", "not", "without", "denies", "denied", "negative for", "neg for", "free of",
    "ruled out", "rule out", "r/o", "excluded", "absence of", "absent", "never", "unlikely",
    "no evidence of", "no sign of", "no signs of", "not consistent with",
)  # fmt: skip
_CUE = re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(c) for c in sorted(_CUES, key=len, reverse=True)) + r")\b")
_CLAUSE_END = re.compile(r"[.;,:\n]")


# Laboratory result text adds "non" ("Non Reactive") and "none" ("None detected") to the cues.
_LAB_CUES = (*_CUES, "non", "none", "neg")
LAB_CUE = re.compile(
    r"(?<![a-z0-9])(" + "|".join(re.escape(c) for c in sorted(_LAB_CUES, key=len, reverse=True)) + r")\b"
)


@lru_cache(maxsize=256)
def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alts = "|".join(re.escape(w.lower()) for w in sorted(words, key=len, reverse=True))
    return re.compile(r"(?<![a-z0-9])(" + alts + r")(?![a-z0-9])")


def negated_at(text: str, start: int, cues: re.Pattern[str] = _CUE) -> bool:
    """Is the phrase beginning at `start` of lower-case `text` negated within its clause?"""
    ends = [m.end() for m in _CLAUSE_END.finditer(text, 0, start)]
    clause = text[ends[-1] if ends else 0 : start]
    return cues.search(clause) is not None


def negated_after(text: str, end: int, cues: re.Pattern[str] = _CUE) -> bool:
    """Is the phrase ending at `end` of lower-case `text` followed by a negation in its clause ("penicillin
    allergy ruled out", "cyclophosphamide: none")? Such a phrase is neither present nor absent."""
    stop = _CLAUSE_END.search(text, end)
    return cues.search(text[end : stop.start() if stop else len(text)]) is not None


def find_unnegated(text: str, words: Iterable[str], cues: re.Pattern[str] = _CUE) -> str | None:
    """The first of `words` (whole words) that stands in lower-case `text` with no negation before it."""
    words = tuple(w for w in words if w)
    if not words:
        return None
    for m in _pattern(words).finditer(text):
        if not negated_at(text, m.start(), cues):
            return m.group(1)
    return None


def find_negated(text: str, words: Iterable[str], cues: re.Pattern[str] = _CUE) -> str | None:
    """The first of `words` that stands in `text` with a negation before it ("no HBV DNA detected")."""
    words = tuple(w for w in words if w)
    for m in _pattern(words).finditer(text) if words else ():
        if negated_at(text, m.start(), cues):
            return m.group(1)
    return None
