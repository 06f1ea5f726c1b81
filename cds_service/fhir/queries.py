"""What the service asks of a FHIR server, and why each search looks the way it does.

The prefetch templates (discovery) ask for Observations by the codes the criteria read, newest first,
500 a page, like the service's own reads; the other keys stay plain searches every EHR can run. When
the service reads `fhirServer` itself it asks only for what the criteria read. Observations are the bulk of a
real chart (vitals, social history, every panel of every visit: thousands for a long-followed
patient), and the criteria read only the codes in `mappings/observations.yaml`; so the Observation
search names those codes (`combo-code`, which matches `Observation.code` and `component.code`;
packed into searches whose query stays under 2 kB, IIS's default limit, and at most 32 codes), sorted newest first, with
the largest page servers commonly grant.
Sorted newest first, a read cut by the page cap still holds the newest results, which are the ones
the recency windows need; the source then counts as not read completely, so nothing is ever
concluded from what the cut left out. A server that refuses the refined search (HTTP 400: strict
servers refuse parameters they do not support) is asked the plain search instead.

No date floor is put on the search: positive findings outlast their windows (an old positive ANA or
hCG still says something) and some criteria read results of any age (a biopsy's ISN/RPS class), so
the look-back is unbounded for most variables; sorting keeps the newest instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlencode

from cds_service.fhir.codes import LOINC

# Prefetch key -> (template, resource type). Each resource type is its own source: what one source
# shows counts whatever another could not be read; "none on record" needs every source that could hold it.
# The cohort entry's (Patient, Condition) come first: the hooks read them before the rest, and a record read
# in two steps keeps the order of one read at once.
QUERIES: dict[str, tuple[str, str]] = {
    "patient": ("Patient/{{context.patientId}}", "Patient"),
    "conditions": ("Condition?patient={{context.patientId}}&_count=500", "Condition"),
    "observations": ("Observation?patient={{context.patientId}}&_count=500", "Observation"),
    "medications": ("MedicationStatement?patient={{context.patientId}}&_count=500", "MedicationStatement"),
    "medicationRequests": ("MedicationRequest?patient={{context.patientId}}&_count=500", "MedicationRequest"),
    "medicationAdministrations": (
        "MedicationAdministration?patient={{context.patientId}}&_count=500",
        "MedicationAdministration",
    ),
    "medicationDispenses": ("MedicationDispense?patient={{context.patientId}}&_count=500", "MedicationDispense"),
    "immunizations": ("Immunization?patient={{context.patientId}}&_count=500", "Immunization"),
    "procedures": ("Procedure?patient={{context.patientId}}&_count=500", "Procedure"),
    "allergyIntolerances": ("AllergyIntolerance?patient={{context.patientId}}&_count=500", "AllergyIntolerance"),
}
SOURCE_LABEL = {
    "Patient": "demographics (Patient)",
    "Condition": "problem list (Condition)",
    "Observation": "results (Observation)",
    "MedicationStatement": "medication statements (MedicationStatement)",
    "MedicationRequest": "medication orders (MedicationRequest)",
    "MedicationAdministration": "administrations (MedicationAdministration)",
    "MedicationDispense": "dispenses (MedicationDispense)",
    "Immunization": "immunizations (Immunization)",
    "Procedure": "procedures (Procedure)",
    "AllergyIntolerance": "allergies (AllergyIntolerance)",
}
MAX_CODES_CHARS = 1500  # the codes of one search, URL-encoded: its query stays under IIS's default 2,048
# and at most this many codes a search: a server may take more than twice as long for one search of 120
# codes as for four of 30 (sekmet: 500 against 320 ms at 1,000 Observations), and one that answers
# concurrently answers smaller searches side by side
MAX_CODES_PER_SEARCH = 32
PAGE_SIZE = 500  # HAPI's default maximum page size; a server that grants less pages on


def prefetch_templates(observation_codes: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """Discovery's prefetch templates. Observations ask for what the criteria read, newest first, in pages
    that hold a real chart's labs: an EHR that sends only the first page (browser EHRs and the CDS Hooks
    sandbox do) then sends the results that matter, and the service completes the rest from `fhirServer`.
    One search (a template is one query): its codes make a URL of about 1.5 kB with today's maps (5 kB when
    every code named its system), which servers that run prefetch accept; one that refuses it sends no
    prefetch for the key, and the service reads it itself."""
    templates = {k: _with_include(k, v[0]) for k, v in QUERIES.items()}
    tokens = ",".join(_tokens(observation_codes))
    if tokens:
        query = urlencode({"combo-code": tokens, "_sort": "-date", "_count": PAGE_SIZE})
        templates["observations"] = "Observation?patient={{context.patientId}}&" + query
    return templates


@dataclass(frozen=True)
class Search:
    """One search, relative to the FHIR base, standing in for (part of) one prefetch key."""

    key: str
    path: str
    newest_first: bool = False  # sorted by -date: a read cut by the page cap keeps the newest
    plain: str | None = None  # the unrefined search to ask instead if the server refuses this one


def plain_search(key: str, patient_id: str) -> str:
    return QUERIES[key][0].replace("{{context.patientId}}", patient_id)


def searches(key: str, patient_id: str, observation_codes: Iterable[tuple[str, str]] = ()) -> list[Search]:
    """The searches that read prefetch key `key` for one patient (several for coded Observations)."""
    plain = plain_search(key, patient_id)
    packed = _packed(frozenset(observation_codes))
    if key in INCLUDES:  # the Medications the records name, in the same answer; plain if refused
        return [Search(key, _with_include(key, plain), plain=plain)]
    if key != "observations" or not packed:
        return [Search(key, plain)]
    return [
        Search(
            key,
            "Observation?"
            + urlencode({"patient": patient_id, "combo-code": value, "_sort": "-date", "_count": PAGE_SIZE}),
            newest_first=True,
            plain=plain,
        )
        for value in packed
    ]


# Large EHRs name the drug by `medicationReference`: without the Medication it points to, the record
# could not be identified (and would count as unread, never as "none on record").
INCLUDES = {
    "medications": "MedicationStatement:medication",
    "medicationRequests": "MedicationRequest:medication",
    "medicationAdministrations": "MedicationAdministration:medication",
    "medicationDispenses": "MedicationDispense:medication",
}


def _with_include(key: str, search: str) -> str:
    return f"{search}&_include={INCLUDES[key]}" if key in INCLUDES else search


def _tokens(codes: Iterable[tuple[str, str]]) -> list[str]:
    """The search tokens of the codes the criteria read, once each: a LOINC code alone, without its system;
    any other as `system|code`.

    A token without a system matches the code in any system (FHIR search, token parameters). A server that
    keeps LOINC under its OID (`urn:oid:2.16.840.1.113883.6.1`, as documents converted from CDA do), or as
    `https://loinc.org`, answers `http://loinc.org|X` with nothing: a positive HIV screen stored so would
    have been left unread while the search counted as read in full, an absence the record does not say.
    The reader keeps only codings whose system (read in every spelling, `codes.canonical_system`) and code
    a map holds, and a LOINC code (digits, a hyphen, a check digit) is rarely another system's, so that
    costs a few bytes, never a fact. A site's own codes keep their system, as its maps name it: one such as
    `HGB` or `5` alone would match every system's (an EHR's flowsheet rows), and thousands of those, newest
    first, could fill the page cap before the results that count."""
    return sorted({_token(code) if system == LOINC else f"{_token(system)}|{_token(code)}" for system, code in codes})


@lru_cache(maxsize=8)
def _packed(codes: frozenset[tuple[str, str]]) -> tuple[str, ...]:
    """The codes' tokens (`_tokens`) joined by commas into as few values as keep each under MAX_CODES_CHARS
    encoded and MAX_CODES_PER_SEARCH codes, shared out evenly: the longest token first, each into the value
    with the fewest characters that still has room (a value of the few long ones left over would be a
    search, and a round trip, of its own).

    The same for every hook of a catalogue, so computed once (the service passes one frozenset)."""
    tokens = [(len(quote(t, safe="")) + 3, t) for t in _tokens(codes)]  # with its encoded comma
    chars = sum(cost for cost, _ in tokens)
    wanted = max(-(-len(tokens) // MAX_CODES_PER_SEARCH), -(-chars // MAX_CODES_CHARS))
    sizes: list[int] = [0] * wanted
    values: list[list[str]] = [[] for _ in range(wanted)]
    for cost, token in sorted(tokens, key=lambda c: (-c[0], c[1])):
        room = [i for i, v in enumerate(values) if sizes[i] + cost <= MAX_CODES_CHARS and len(v) < MAX_CODES_PER_SEARCH]
        if not room:  # the even share did not fit: one more search
            sizes.append(0)
            values.append([])
            room = [len(values) - 1]
        i = min(room, key=lambda i: sizes[i])
        sizes[i] += cost
        values[i].append(token)
    return tuple(",".join(sorted(v)) for v in values)


def _token(value: str) -> str:
    """Escape the characters FHIR search gives meaning to inside a token ("\\", ",", "|", "$")."""
    for ch in ("\\", ",", "|", "$"):
        value = value.replace(ch, "\\" + ch)
    return value
