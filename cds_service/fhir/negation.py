"""Negation is read before any positive word: "no SLE", "ruled out lupus", "negative for HIV".

A phrase found in free text counts only when no negation cue stands before it in the same clause
(a clause ends at `.`, `;`, `,`, `:` or a line break, as in NegEx's scope). The cues are the
pre-negation triggers of NegEx (Chapman et al., 2001) that problem lists and lab comments use.
Text that negates is never read as present; whether it proves absence is the caller's question.

A diagnosis written as text is read further (`diagnosis_reading`), after NegEx's post-negation triggers
and ConText's (Harkema et al., 2009) experiencer and uncertainty cues: "SLE ruled out" and "SLE:
negative workup" are negated after the phrase, "family history of SLE" and "mother has SLE" are another
person's, "SLE-like" another disease, and "suspected SLE", "? SLE", "SLE vs RA" or "SLE workup pending" are
a diagnosis not yet made.
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


# after the diagnosis, in its clause (a colon does not end it here: "SLE: ruled out")
_POST_NEGATION = (
    "ruled out",
    "r/o",
    "excluded",
    "not confirmed",
    "unconfirmed",
    "unlikely",
    "negative workup",
    "negative work-up",
    "workup negative",
    "work-up negative",
    "was negative",
    "is negative",
    "not present",
    "not found",
    "not supported",
)  # fmt: skip  (not "negative" alone: "SLE with negative anti-dsDNA" is SLE)
# another person's: a relative or a family history, before or after the diagnosis in its clause
_OTHER_PERSON = (
    "family history", "family hx", "fhx", "fh", "mother", "mom", "father", "dad", "sister", "brother", "sibling",
    "siblings", "parent", "parents", "aunt", "uncle", "cousin", "grandmother", "grandfather", "daughter", "son",
    "maternal", "paternal", "relative", "relatives", "twin",
)  # fmt: skip
# a diagnosis not yet made: before it, or after it in its clause
_DOUBT_BEFORE = (
    "suspected", "suspect", "suspicion of", "possible", "possibly", "probable", "probably", "likely", "query",
    "questionable", "question of", "?", "evaluate for", "evaluation for", "eval for", "work up for",
    "workup for", "concern for", "concerning for", "consider", "cannot exclude", "can't exclude", "differential",
    "ddx", "presumed", "provisional", "borderline", "incomplete",
)  # fmt: skip
_DOUBT_AFTER = ("?", "suspected", "possible", "probable", "query", "vs", "versus", "provisional")
# Right after the diagnosis (past punctuation and a few filler words), not anywhere later in its clause: "SLE -
# renal biopsy pending", "SLE (nephritis ruled out)" and "SLE - mother has RA" speak of something else
_LEAD = (
    r"[\s\-:()\[\]]*(?:(?:diagnosis|dx|was|is|has been|been|previously|now|in|her|his|the|both|two|three|several"
    r"|multiple|\d+)\s+)*"
)


def _right_after(cues: Iterable[str], tail: str = "") -> re.Pattern[str]:
    alts = "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))
    return re.compile(_LEAD + r"(?:" + alts + r")(?![a-z0-9])" + tail)


# a relative right after it is the relative's diagnosis ("SLE in mother"), unless the relative goes on to
# have something of their own ("SLE - mother has RA")
_OWN_THING = r"(?!\s+(?:has|had|with|diagnosed)\s+(?!(?:it|this|that|same|the same|sle|lupus|\d+)\b))"
_OTHER_AFTER = _right_after(_OTHER_PERSON, _OWN_THING)
_OTHER_LATER = re.compile(_pattern(_OTHER_PERSON).pattern + _OWN_THING)
# a negation it cannot be told from ("SLE not ruled out", "cannot be excluded"): a diagnosis not yet made
_DOUBLE_NEGATIVE = _pattern(
    ("not ruled out", "not been ruled out", "cannot be ruled out", "can't be ruled out", "not excluded",
     "cannot be excluded", "can't be excluded", "not yet excluded")
)  # fmt: skip
# what is being worked up ("SLE workup pending"), denied when the workup came back negative ("SLE workup:
# negative", "SLE work-up was normal"; "SLE workup neg for nephritis" speaks of nephritis)
_WORKUP = re.compile(r"[ \-]*(?:work[ -]?up|(?:(?:dx|diagnosis)\s+)?pending)(?![a-z0-9])")
_WORKUP_NEGATIVE = re.compile(
    r"[ \-]*(?:work[ -]?up|pending)[\s:\-]*(?:(?:was|is|came back|returned)\s+)?"
    r"(?:negative|neg|unremarkable|normal)(?![a-z0-9])(?!\s+for\b)"
)
# another disease named after it ("SLE-like", "SLE like illness": undifferentiated CTD), not "SLE like her mother"
_LIKENESS = re.compile(
    r"-like(?![a-z0-9])|\s+like\s+(?:illness|disease|syndrome|picture|presentation|features|symptoms|disorder)\b"
)


_POST_CUE, _OTHER_CUE = _right_after(_POST_NEGATION), _pattern(_OTHER_PERSON)
_POST_ANYWHERE = _pattern(_POST_NEGATION)
_DOUBT_BEFORE_CUE, _DOUBT_AFTER_CUE = _pattern(_DOUBT_BEFORE), _pattern(_DOUBT_AFTER)
_POST_END = re.compile(r"[.;,\n]")


def diagnosis_reading(text: str, words: Iterable[str]) -> str | None:
    """How lower-case `text` states a diagnosis named by `words`: "present", "doubtful" (suspected, queried,
    one of a differential, being worked up), "denied" (every mention negated before or right after it, or
    another person's), "contested" (another disease named after it, "SLE-like", or a negation or a relative
    later in its clause that may or may not be about it: "SLE (biopsy 2019) ruled out", "SLE (nephritis ruled
    out)") or None (not named). One plain mention anywhere makes it present. The caller reads "contested" as
    no diagnosis in text alone, and as one not yet made beside a code that says it."""
    words = tuple(w for w in words if w)
    found = None
    for m in _pattern(words).finditer(text) if words else ():
        ends = [e.end() for e in _CLAUSE_END.finditer(text, 0, m.start())]
        before = text[ends[-1] if ends else 0 : m.start()]
        heads = [e.end() for e in _POST_END.finditer(text, 0, m.start())]  # "Family history: SLE" is one clause
        headed = text[heads[-1] if heads else 0 : m.start()]
        stop = _POST_END.search(text, m.end())
        after = text[m.end() : stop.start() if stop else len(text)]
        if _CUE.search(before) or _OTHER_CUE.search(headed) or _WORKUP_NEGATIVE.match(after):
            found = found or "denied"
            continue
        if _DOUBLE_NEGATIVE.search(after):
            found = "doubtful"
            continue
        if _POST_CUE.match(after) or _OTHER_AFTER.match(after):
            found = found or "denied"
            continue
        if _LIKENESS.match(after) or _POST_ANYWHERE.search(after) or _OTHER_LATER.search(after):
            found = found or "contested"
            continue
        if _DOUBT_BEFORE_CUE.search(before) or _DOUBT_AFTER_CUE.search(after) or _WORKUP.match(after):
            found = "doubtful"
            continue
        return "present"
    return found


# the cues that negate a diagnosis's own text; not "not" or "without" alone, which code titles hold ("not
# otherwise specified", "hepatitis B without delta-agent")
_SAYS_NO = _pattern(
    ("no", "denies", "denied", "negative for", "neg for", "free of", "ruled out", "rule out", "r/o", "excluded",
     "absence of", "never", "unlikely", "no evidence of", "not consistent with", "not confirmed", "unconfirmed",
     "was negative", "is negative", "came back negative", "not present", "not found", "not supported")
)  # fmt: skip


def says_negation(text: str) -> bool:
    """Whether lower-case `text` negates something ("Pregnancy ruled out", "No TB", "HSV PCR was negative"):
    for a coded diagnosis whose group has no words to read it by, its own text casting doubt on it (a person
    reads it) rather than a definite diagnosis."""
    return bool(_SAYS_NO.search(text) or _DOUBLE_NEGATIVE.search(text))
