"""Syntax checks for clinical codes.

A wrong code silently hides patients, so every code in `mappings/` is checked
for the shape its code system guarantees: LOINC's mod-10 check digit, SNOMED CT's
Verhoeff check digit (and partition identifier), the ICD-10-CM pattern, RxNorm's
numeric RXCUI. These catch typos; they cannot prove a code means what its label
says, which is what clinician review of the YAML is for.
"""

from __future__ import annotations

import re

from cds_service.fhir.kept import Kept

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO ICD-10, the coding used outside the US
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

_LOINC_RE = re.compile(r"^(\d{1,7})-(\d)$")
_ICD10CM_RE = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
_RXNORM_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_SNOMED_RE = re.compile(r"^[1-9][0-9]{5,17}$")
_CVX_RE = re.compile(r"^[0-9]{1,3}$")
_ATC_RE = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")

# Verhoeff dihedral-group tables.
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit is the Verhoeff check digit of the rest."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def loinc_valid(code: str) -> bool:
    """LOINC codes end in a mod-10 (Luhn-style) check digit after the hyphen."""
    m = _LOINC_RE.match(code)
    if not m:
        return False
    body, check = m.group(1), int(m.group(2))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # rightmost digit of the body is doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == check


def snomed_valid(code: str) -> bool:
    """SCTID: 6-18 digits, Verhoeff check digit, partition id 00/01/02 or 10/11/12."""
    if not _SNOMED_RE.match(code) or not verhoeff_valid(code):
        return False
    return code[-3:-1] in {"00", "01", "02", "10", "11", "12"}


def icd10cm_valid(code: str) -> bool:
    """ICD-10-CM: letter, digit, alphanumeric, optional dot and up to 4 more."""
    return bool(_ICD10CM_RE.match(code))


def rxnorm_valid(code: str) -> bool:
    return bool(_RXNORM_RE.match(code))


def cvx_valid(code: str) -> bool:
    return bool(_CVX_RE.match(code))


def atc_valid(code: str) -> bool:
    return bool(_ATC_RE.match(code))


VALIDATORS = {
    LOINC: loinc_valid,
    SNOMED: snomed_valid,
    ICD10CM: icd10cm_valid,
    RXNORM: rxnorm_valid,
    CVX: cvx_valid,
    ATC: atc_valid,
}


def code_valid(system: str, code: str) -> bool:
    """Syntax check for a code of a known system; codes of other systems pass."""
    check = VALIDATORS.get(system)
    return check(code) if check else bool(code)


# --- how records spell the systems and codes read ------------------------------------------------------

# Coding.system as sources also send it: the registered OID (HL7's NamingSystem identifiers; C-CDA-derived
# feeds keep them, with or without "urn:oid:"), or the canonical URI with a trailing slash. Read as the
# canonical system, a LOINC code sent under its OID finds its variable: otherwise a positive HIV result so
# sent was passed over as a code no map holds, and an SLE diagnosis so coded left the patient outside.
# OIDs checked against HL7 THO NamingSystem/CodeSystem identifiers (LOINC 6.1) and public code that maps
# them (ICD-10-CM 6.90, WHO ICD-10 6.3, SNOMED CT 6.96, RxNorm 6.88, CVX 12.292).
_OIDS = {
    "2.16.840.1.113883.6.1": LOINC,
    "2.16.840.1.113883.6.96": SNOMED,
    "2.16.840.1.113883.6.90": ICD10CM,
    "2.16.840.1.113883.6.3": ICD10,
    "2.16.840.1.113883.6.88": RXNORM,
    "2.16.840.1.113883.12.292": CVX,
}
_CANONICAL = (LOINC, SNOMED, ICD10CM, ICD10, RXNORM, CVX)
SYSTEM_ALIASES = {
    **{f"urn:oid:{oid}": uri for oid, uri in _OIDS.items()},
    **_OIDS,
    **{f"{uri}/": uri for uri in _CANONICAL},
    **{uri.replace("http://", "https://", 1) + end: uri for uri in _CANONICAL for end in ("", "/")},
}
# an edition or version of SNOMED CT written into the system ("http://snomed.info/sct/731000124108/version/
# 20230301", which belongs in Coding.version): concept ids are the same in every edition. Only that shape: a
# site's own "http://snomed.info/sct/local-codes" is not SNOMED CT
_SNOMED_EDITION = re.compile(r"https?://snomed\.info/sct/\d+(?:/version/\d+)?/?")


# systems read, by their text: a record uses a handful, a screen the same few; a longer one is worked out each time
_SYSTEMS_READ: Kept[str, str] = Kept(limit=2_000, chars=200)


def canonical_system(system: str) -> str:
    """The system URI the maps are written in for `system` as a record spells it (case and surrounding
    space aside: "URN:OID:2.16.840.1.113883.6.1 "); any other unchanged. Kept by its text (every coding of
    every resource asks)."""
    got = _SYSTEMS_READ.get(system)
    return got if got is not None else _SYSTEMS_READ.keep(system, _canonical(system))


def _canonical(system: str) -> str:
    alias = SYSTEM_ALIASES.get(system)
    if alias is not None:
        return alias
    if system in _CANONICAL:
        return system
    folded = system.strip().lower()
    if folded != system:
        if folded in _CANONICAL:
            return folded
        alias = SYSTEM_ALIASES.get(folded)
        if alias is not None:
            return alias
    return SNOMED if _SNOMED_EDITION.fullmatch(folded) else system


_ICD_NOISE = re.compile(r"[\s\u00a0]+")


def icd10_code(code: str) -> str:
    """An ICD-10(-CM) code as the maps write it: upper case, no space, a dot after the three-character
    category and none at the end. Claims feeds and some exports send "M320" for M32.0: read as written, the
    prefix M32 (SLE) matched it while the exclusion M32.0 (drug-induced lupus) did not, and "D84821" escaped
    D84.821's exclusion; "M320.", "M32..0" and "M32 0" are the same code."""
    c = _ICD_NOISE.sub("", code).upper().replace(".", "")
    return f"{c[:3]}.{c[3:]}" if len(c) > 3 else c
