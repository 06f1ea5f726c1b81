"""What the EHR and the FHIR server send, read as resources: a searchset Bundle's entries and its next link,
and a prefetch value (a bare resource, a Bundle, or null). Shared by gathering from prefetch and from the
server (gather.py); nothing here contacts anything: a next link is only checked (`continuation`)."""

from __future__ import annotations

import re
from typing import Any

from cds_service.fhir.queries import QUERIES
from cds_service.fhir.urls import Origin, UnsafeUrl


def entries(bundle: dict, rtype: str) -> list[dict]:
    """The resources of `rtype` (and the Medications they may name) in a Bundle's entries; OperationOutcomes
    and `search.mode: outcome` entries are messages, not records."""
    out = []
    items = bundle.get("entry")
    for e in items if isinstance(items, list) else []:
        if not isinstance(e, dict):
            continue
        res = e.get("resource")
        search = e.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if not isinstance(res, dict) or res.get("resourceType") == "OperationOutcome" or mode == "outcome":
            continue
        if res.get("resourceType") in (rtype, "Medication"):
            out.append(res)
    return out


def next_link(bundle: dict) -> str | None:
    """The Bundle's `next` link as sent, unchecked (`continuation`, `Origin.follow` check it)."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


_KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


def unasked_keys(prefetch: dict[str, Any]) -> str | None:
    """Prefetch keys discovery does not name are ignored, and the card says so (names only when plain)."""
    extra = sorted(k for k in prefetch if k not in QUERIES)
    if not extra:
        return None
    shown = [k for k in extra if _KEY_NAME.fullmatch(k)]  # not `$`: it matches before a final newline
    names = f": {', '.join(shown[:10])}" if len(shown) == len(extra) and len(extra) <= 10 else ""
    return f"{len(extra)} prefetch key(s) this service does not ask for were ignored{names}"


def read_prefetch(value: Any, rtype: str) -> tuple[bool, str | None]:
    """Whether a prefetch value is usable, and its next-page link if the Bundle was cut; its resources are
    `prefetched` (apart, so a hook that needs only the Patient and Conditions never walks the rest)."""
    if value is None:
        return True, None  # CDS Hooks: null = the client had no data for this key
    if not isinstance(value, dict) or value.get("resourceType") == "OperationOutcome":
        return False, None
    if value.get("resourceType") == "Bundle":
        return True, next_link(value)
    return value.get("resourceType") == rtype, None


def prefetched(value: Any, rtype: str) -> list[dict]:
    """The resources of a prefetch value `read_prefetch` judged: a Bundle's entries, or the bare resource."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return entries(value, rtype)
    return [value] if value.get("resourceType") == rtype else []


def continuation(link: str | None, base: Origin | None) -> str | None:
    """The checked URL to continue a cut prefetch Bundle from, when it stays on the allowed fhirServer."""
    if not link or base is None:
        return None
    try:
        return base.follow(link)
    except UnsafeUrl:
        return None
