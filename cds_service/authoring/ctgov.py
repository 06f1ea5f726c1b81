"""`trial-matcher import`: a ClinicalTrials.gov API v2 study record becomes a trial file to encode.

Structured fields are filled (sponsor, phase, status, sites, conditions); age and sex become computable
criteria from the record's structured eligibility fields; every bullet of the eligibility text becomes a
criterion quoting it verbatim (nested bullets as sub-criteria), marked `review: imported, not yet
encoded`. Where the wording is clear (a lab threshold with its unit, an x ULN limit, an age range) the
criterion gets a `suggested_rule`, which never decides a verdict until a person promotes it to `rule`.
"""

from __future__ import annotations

import re
from typing import Any

from cds_service.authoring.suggest import suggest_rule
from cds_service.fhir.mappings import Mappings

IMPORTED = "imported, not yet encoded"
_BULLET = re.compile(r"^(\s*)(?:[*\-•·]|\d{1,2}[.)]|[a-z][.)]|\(\d{1,2}\)|[ivx]{1,4}[.)])\s+(.*)$")
_SECTION = re.compile(r"^\s*(inclusion|exclusion)\s+criteria\s*:?\s*$", re.IGNORECASE)
_AGE = re.compile(r"^(\d+)\s*(year|month|week|day)s?$", re.IGNORECASE)
_PHASES = {"EARLY_PHASE1": "Early Phase 1", "PHASE1": "Phase 1", "PHASE2": "Phase 2", "PHASE3": "Phase 3",
           "PHASE4": "Phase 4", "NA": "Not Applicable"}  # fmt: skip


def structured_lines(record: dict[str, Any]) -> list[str]:
    """The structured eligibility fields as the lines an age/sex criterion quotes (kept in the source text)."""
    elig = _module(record, "eligibilityModule")
    lines = []
    for key, label in (("sex", "Sex"), ("minimumAge", "Minimum age"), ("maximumAge", "Maximum age")):
        if elig.get(key):
            lines.append(f"{label}: {elig[key]}")
    return lines


def import_record(record: dict[str, Any], mappings: Mappings) -> dict[str, Any]:
    """The trial file (as data) for one v2 study record."""
    ident = _module(record, "identificationModule")
    nct = str(ident.get("nctId", ""))
    if not re.fullmatch(r"NCT\d{8}", nct):
        raise ValueError("the record has no identificationModule.nctId of the form NCT12345678")
    elig = _module(record, "eligibilityModule")
    trial: dict[str, Any] = {
        "id": nct,
        "title": ident.get("officialTitle") or ident.get("briefTitle") or nct,
        "short_title": ident.get("briefTitle"),
        "sponsor": _str(_object(_module(record, "sponsorCollaboratorsModule"), "leadSponsor").get("name")) or "unknown",
        "phase": ", ".join(_PHASES.get(str(p), str(p)) for p in _items(_module(record, "designModule"), "phases"))
        or "unknown",
        "status": str(_module(record, "statusModule").get("overallStatus", "unknown")).replace("_", " ").capitalize(),
        "url": f"https://clinicaltrials.gov/study/{nct}",
        "conditions": [str(c) for c in _items(_module(record, "conditionsModule"), "conditions")],
        "intervention": "; ".join(
            str(i["name"])
            for i in _items(_module(record, "armsInterventionsModule"), "interventions")
            if isinstance(i, dict) and i.get("name")
        )
        or None,
        "sites": _sites(record),
        "min_age": _years(elig.get("minimumAge")),
        "max_age": _years(elig.get("maximumAge")),
        "sex": {"FEMALE": "female", "MALE": "male"}.get(str(elig.get("sex", "")).upper(), "all"),
        "source": f"trials/sources/{nct}.json",
        "notes": ["imported from ClinicalTrials.gov; its criteria are not yet encoded, so the study team reviews each"],
        "draft": True,  # never evaluated until a person encodes the criteria and removes this
        "criteria": _structured_criteria(record) + criteria_from_text(_str(elig.get("eligibilityCriteria")), mappings),
    }
    trial["entry"] = propose_entry(record, trial["criteria"], mappings)
    return {k: v for k, v in trial.items() if v is not None}


def propose_entry(record: dict[str, Any], criteria: list[dict[str, Any]], mappings: Mappings) -> dict | None:
    """The cohort entry, from the record's conditions, else its title, else the first inclusion bullet that
    names a condition group: groups whose label is the text itself first, else groups whose words it holds.
    None when nothing names a group the maps know (lint then asks for one)."""
    ident = _module(record, "identificationModule")
    conditions = [str(c) for c in _items(_module(record, "conditionsModule"), "conditions")]
    hits = [(c, _groups_named(c, mappings)) for c in conditions]
    hits = [(c, g) for c, g in hits if g]
    if hits:
        groups = sorted({g for _, gs in hits for g in gs})
        return {"groups": groups, "text": " ... ".join(c for c, _ in hits)}
    inclusion = [c["text"] for c in criteria if c.get("type") == "inclusion" and "rule" not in c]
    for text in [ident.get("briefTitle"), ident.get("officialTitle"), *inclusion]:
        if text and (groups := _groups_named(str(text), mappings)):
            return {"groups": sorted(groups), "text": str(text)}
    return None


def _groups_named(text: str, mappings: Mappings) -> frozenset[str]:
    """Groups whose label the text names ("... in Lupus Nephritis": lupus nephritis, not SLE as well),
    else the groups whose words it holds."""
    wanted = " ".join(text.lower().split())
    named = frozenset(k for k, g in mappings.conditions.groups.items() if g.label.lower() in wanted)
    return named or mappings.condition_groups_from_text(text)


def _module(record: dict[str, Any], name: str) -> dict[str, Any]:
    """One module of the record; {} when it, or the protocol section, is missing or not an object."""
    protocol = record.get("protocolSection") if isinstance(record, dict) else None
    section = protocol.get(name) if isinstance(protocol, dict) else None
    return section if isinstance(section, dict) else {}


def _items(module: dict[str, Any], key: str) -> list[Any]:
    """A list field of a module; [] when it is anything else (junk in a record is left out, not a crash)."""
    value = module.get(key)
    return value if isinstance(value, list) else []


def _object(module: dict[str, Any], key: str) -> dict[str, Any]:
    value = module.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sites(record: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for loc in _items(_module(record, "contactsLocationsModule"), "locations"):
        if isinstance(loc, dict) and loc.get("facility"):
            site = {
                "name": loc["facility"],
                "city": loc.get("city"),
                "region": loc.get("state"),
                "country": loc.get("country"),
            }
            out.append({k: str(v) for k, v in site.items() if v})
    return out


def _years(value: Any) -> int | None:
    m = _AGE.match(str(value or "").strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).lower()
    return n if unit == "year" else n // {"month": 12, "week": 52, "day": 365}[unit]


def _structured_criteria(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Age and sex are structured in the record: computable as imported."""
    elig = _module(record, "eligibilityModule")
    lo, hi = _years(elig.get("minimumAge")), _years(elig.get("maximumAge"))
    out: list[dict[str, Any]] = []
    if lo is not None or hi is not None:
        age = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        quoted = " ... ".join(x for x in structured_lines(record) if "age" in x.lower())
        out.append({"id": "age", "type": "inclusion", "text": quoted, "rule": {"age": age}})
    sex = {"FEMALE": "female", "MALE": "male"}.get(str(elig.get("sex", "")).upper())
    if sex:
        out.append({"id": "sex", "type": "inclusion", "text": f"Sex: {elig['sex']}", "rule": {"sex": sex}})
    return out


def criteria_from_text(text: str, mappings: Mappings) -> list[dict[str, Any]]:
    """One criterion per bullet (nested bullets as sub-criteria), in the sections the text names."""
    roots: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []
    section = "inclusion"
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if m := _SECTION.match(raw.replace("Key ", "").replace("key ", "")):
            section, stack = m.group(1).lower(), []
            continue
        bullet = _BULLET.match(raw)
        if bullet is None and stack:
            stack[-1][1]["lines"].append(raw.strip())  # a wrapped line continues its bullet (joined once, below)
            continue
        indent = len(bullet.group(1).expandtabs(4)) if bullet else -1
        item = {"type": section, "lines": [(bullet.group(2) if bullet else raw).strip()], "children": []}
        while stack and stack[-1][0] >= indent:
            stack.pop()
        (stack[-1][1]["children"] if stack else roots).append(item)
        stack.append((indent, item))
    out: list[dict[str, Any]] = []
    counters = {"inclusion": 0, "exclusion": 0}
    for item in roots:
        counters[item["type"]] += 1
        _flatten(item, f"{item['type'][:3]}-{counters[item['type']]}", mappings, out)
    return out


def _flatten(item: dict[str, Any], cid: str, mappings: Mappings, out: list[dict[str, Any]]) -> None:
    text = " ".join(item["lines"])  # joined once: `+=` per wrapped line was quadratic on long bullets
    criterion: dict[str, Any] = {"id": cid, "type": item["type"], "text": text, "review": IMPORTED}
    suggestion = suggest_rule(text, mappings)
    if suggestion is not None:
        criterion["suggested_rule"] = suggestion
    out.append(criterion)
    for k, child in enumerate(item["children"], start=1):
        _flatten({**child, "type": item["type"]}, f"{cid}.{k}", mappings, out)
