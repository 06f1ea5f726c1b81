"""Whose record a resource is: every patient it names must be the same one.

A resource names patients in more than its `subject`: `patient` (Immunization), `beneficiary`,
`performer` (a patient measuring their own pressure), `focus` (an Observation about a fetus or a
donor), `asserter`, `recorder`, `requester`, `informationSource`. Checking only one of them let a
resource whose `subject` is another patient count for ours because its `patient` named ours, or the
reverse. So a resource is about a patient only when one of its owner fields names that patient and
every patient reference it holds names the same one; anything else is set aside, and said so.

A reference names a patient when its `reference` is `Patient/ID` (relative or absolute) or its `type`
is Patient. One that says Patient but cannot be resolved here (identifier only, another server, a
`Patient/ID/_history` form under strict matching) is a patient we cannot confirm is ours: it disagrees.

`scope_to_patient` keeps, of what a hook gathered, what is about its patient (and the Medications that
what is kept references); the screen asks `owner` of every line it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cds_service.fhir.urls import Origin

OWNER_FIELDS = ("subject", "patient", "beneficiary")  # whose record the resource is
OTHER_FIELDS = ("performer", "focus", "asserter", "recorder", "requester", "informationSource", "reportedReference")
ALL_FIELDS = tuple((f, f in OWNER_FIELDS) for f in OWNER_FIELDS + OTHER_FIELDS)  # (field, names the owner)
UNRESOLVED = ""  # a patient reference whose patient cannot be told (identifier only, no Patient/ID)


def _references(value: Any) -> Iterator[dict]:
    """The Reference objects of one element: a Reference, a list of them, or `{actor: Reference}` items
    (Procedure.performer, Immunization.performer). Anything else holds none."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("actor"), dict):
            item = item["actor"]
        if isinstance(item, dict):
            yield item


def _names_a_patient(ref: dict) -> bool:
    text = ref.get("reference")
    return (isinstance(text, str) and "Patient/" in text) or ref.get("type") == "Patient"


def patients_named(res: dict) -> set[str]:
    """The ids of every patient a resource names (a Patient names itself), UNRESOLVED among them when a
    patient reference cannot be resolved. One id: one patient's. None: nobody's. More: set it aside."""
    return _named(res)[0]


def owner(res: dict) -> tuple[str | None, bool]:
    """(the patient whose record this is, or None; True when it names more than one patient). A record
    needs its owner field (or to be the Patient itself): a performer alone does not make it theirs."""
    named, owned = _named(res)
    if len(named) > 1 or UNRESOLVED in named:
        return None, len(named) > 1
    return (next(iter(named)) if named and owned else None), False


def _named(res: dict) -> tuple[set[str], bool]:
    """`patients_named`, and whether an owner field names a patient (or the resource is the Patient), in one
    pass over the fields: a screen asks it of every line it parses, and two walks through generators were
    most of what reading a partition cost beyond orjson (tests/test_speed_attack.py holds it to them).

    A reference names a patient when its `reference` is `.../Patient/ID[/_history/N]` (the id after the last
    `Patient/`, on whatever server: for data of one source, an export or a posted Bundle, whose ids are that
    source's) or its `type` is Patient (then UNRESOLVED, unless the reference gives the id)."""
    named: set[str] = set()
    owned = res.get("resourceType") == "Patient"
    if owned:
        named.add(res["id"] if isinstance(res.get("id"), str) and res["id"] else UNRESOLVED)
    for f, owner_field in ALL_FIELDS:
        value = res.get(f)
        if value is None:
            continue
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, dict):
                continue
            actor = item.get("actor")
            ref = actor if isinstance(actor, dict) else item
            text = ref.get("reference")
            if isinstance(text, str) and "Patient/" in text:
                named.add(text.rsplit("Patient/", 1)[1].split("/", 1)[0])
            elif ref.get("type") == "Patient":
                named.add(UNRESOLVED)
            else:
                continue
            owned = owned or owner_field
    return named, owned


def wanted_references(patient_id: str, base: Origin | None) -> frozenset[str]:
    """The references that name the context patient in a hook: `Patient/ID`, and absolute on the FHIR
    server read."""
    return frozenset({f"Patient/{patient_id}"} | ({f"{base.url}/Patient/{patient_id}"} if base is not None else set()))


def about(res: dict, wanted: frozenset[str]) -> bool:
    """True when `res` is the context patient's record for a hook: an owner field names the patient (one of
    `wanted_references`) and every patient reference it holds names them. One pass over the fields, for
    each of the thousand resources a hook may bring."""
    owned = False
    for f, owner_field in ALL_FIELDS:
        value = res.get(f)
        if value is None:
            continue
        for ref in _references(value):
            if _names_a_patient(ref):
                text = ref.get("reference")  # a list or an object where a string belongs names nobody we know
                if not isinstance(text, str) or text not in wanted:
                    return False
                owned = owned or owner_field
    return owned


def _reference(value: Any) -> str | None:
    """The `reference` string of a Reference element, or None for any other shape."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def scope_to_patient(resources: list[dict], patient_id: str, base: Origin | None) -> tuple[list[dict], int]:
    """Keep only what is about the context patient; return (kept, number set aside).

    A resource counts when its subject/patient is a reference to the context patient (relative,
    or absolute on the fhirServer) and so is every other patient it names (above). No subject,
    an identifier-only subject, a reference to another server or a second patient could be anyone's,
    so it is set aside, not evaluated. Medication resources
    are kept only when a kept resource references them.
    """
    kept: list[dict] = []
    medications: dict[str, dict] = {}
    aside = 0
    wanted = wanted_references(patient_id, base)
    for res in resources:
        rtype = res.get("resourceType")
        if rtype == "Medication":
            medications.setdefault(f"Medication/{res.get('id')}", res)
        elif (rtype == "Patient" and res.get("id") == patient_id) or about(res, wanted):
            kept.append(res)
        else:
            aside += 1
    referenced = {_reference(r.get("medicationReference")) for r in kept}
    for ref, med in medications.items():
        if ref in referenced or (base is not None and f"{base.url}/{ref}" in referenced):
            kept.append(med)
        else:
            aside += 1
    return kept, aside
