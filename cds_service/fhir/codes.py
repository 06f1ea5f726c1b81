"""Syntax checks for clinical codes.

A wrong code silently hides patients, so every code in `mappings/` is checked
for the shape its code system guarantees: LOINC's mod-10 check digit, SNOMED CT's
Verhoeff check digit (and partition identifier), the ICD-10-CM pattern, RxNorm's
numeric RXCUI. These catch typos; they cannot prove a code means what its label
says, which is what clinician review of the YAML is for.
"""

from __future__ import annotations

import re

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
