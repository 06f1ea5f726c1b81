"""Gather one patient's FHIR resources: from the hook's prefetch, else from the FHIR server.

Every prefetch key that arrived is used as is (a bare resource or a searchset
Bundle; null means "no data"). Keys that did not arrive are fetched from
`fhirServer`, concurrently, following `Bundle.link[next]` up to a page cap.

What the service may contact is decided here: only FHIR base URLs on the
allow-list, no redirects, `next` links only back to the same server. Failures
never raise to the caller; they become `gaps` (short, data-free sentences) and
the kind of resource stays "not gathered", so absence is never mistaken for
"none on record".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

# Prefetch key -> (template, resource type, kind it completes)
QUERIES: dict[str, tuple[str, str, str]] = {
    "patient": ("Patient/{{context.patientId}}", "Patient", "Patient"),
    "conditions": ("Condition?patient={{context.patientId}}&_count=100", "Condition", "Condition"),
    "observations": ("Observation?patient={{context.patientId}}&_count=100", "Observation", "Observation"),
    "medications": (
        "MedicationStatement?patient={{context.patientId}}&_count=100",
        "MedicationStatement",
        "Medication",
    ),
    "medicationRequests": (
        "MedicationRequest?patient={{context.patientId}}&_count=100",
        "MedicationRequest",
        "Medication",
    ),
    "immunizations": ("Immunization?patient={{context.patientId}}&_count=100", "Immunization", "Medication"),
}
KIND_LABEL = {
    "Patient": "demographics (Patient)",
    "Condition": "problem list (Condition)",
    "Observation": "results (Observation)",
    "Medication": "medication history",
}


def prefetch_templates() -> dict[str, str]:
    return {k: v[0] for k, v in QUERIES.items()}


class FetchError(Exception):
    """A FHIR request that gave nothing usable. The message carries no patient data."""


@dataclass
class Gathered:
    resources: list[dict] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)  # kinds whose absence means "none on record"
    gaps: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # prefetch key -> prefetch | fetched | unavailable
    server_refused: bool = False  # fhirServer not on the allow-list

    @property
    def patient_found(self) -> bool:
        return any(r.get("resourceType") == "Patient" for r in self.resources)


def server_allowed(url: str, allowed: list[str]) -> bool:
    """True when `url` is under one of the allowed base URLs (scheme, host, port and path prefix)."""
    if "*" in allowed:
        return True
    target = urlsplit(url)
    for entry in allowed:
        a = urlsplit(entry)
        if a.scheme != target.scheme or (a.hostname or "").lower() != (target.hostname or "").lower():
            continue
        if a.port is not None and a.port != target.port:
            continue
        prefix = a.path.rstrip("/")
        if prefix and not (target.path == prefix or target.path.startswith(prefix + "/")):
            continue
        return True
    return False


def _about_patient(res: dict, patient_id: str) -> bool:
    """Prefetched data must be about the context patient; anything else is dropped."""
    if res.get("resourceType") == "Patient":
        return res.get("id") == patient_id
    ref = (res.get("subject") or res.get("patient") or {}).get("reference")
    if not isinstance(ref, str):
        return True  # unreferenced (e.g. a Medication): kept, harmless
    return ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}")


def _entries(bundle: dict, rtype: str) -> list[dict]:
    out = []
    for e in bundle.get("entry") or []:
        if not isinstance(e, dict):
            continue
        res = e.get("resource")
        mode = (e.get("search") or {}).get("mode")
        if not isinstance(res, dict) or res.get("resourceType") == "OperationOutcome" or mode == "outcome":
            continue
        if res.get("resourceType") in (rtype, "Medication"):
            out.append(res)
    return out


def _next_link(bundle: dict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


@dataclass
class Gatherer:
    client: httpx.AsyncClient
    allowed_servers: list[str]
    page_cap: int = 20
    budget_seconds: float = 3.5

    async def gather(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
    ) -> Gathered:
        out = Gathered()
        prefetch = prefetch or {}
        can_fetch = bool(fhir_server) and server_allowed(fhir_server, self.allowed_servers)  # type: ignore[arg-type]
        if fhir_server and not can_fetch:
            out.server_refused = True
            out.gaps.append("the EHR's FHIR server is not on this service's allow-list, so it was not contacted")
        kind_ok: dict[str, bool] = {}
        to_fetch: list[tuple[str, str | None]] = []  # (key, absolute URL to continue from, or None = from start)
        for key, (_template, rtype, kind) in QUERIES.items():
            if key in prefetch:
                value = prefetch[key]
                ok, cont = self._use_prefetch(key, value, rtype, patient_id, out)
                if cont and can_fetch and cont.startswith(fhir_server):  # type: ignore[arg-type]
                    to_fetch.append((key, cont))
                    continue
                if cont:
                    out.gaps.append(f"prefetched {KIND_LABEL[kind]} was only the first page")
                    ok = False
                kind_ok[kind] = kind_ok.get(kind, True) and ok
                out.sources[key] = "prefetch"
            elif can_fetch:
                to_fetch.append((key, None))
            else:
                kind_ok[kind] = False
                out.sources[key] = "unavailable"
        if to_fetch:
            results = await self._fetch_many(to_fetch, patient_id, fhir_server, token)  # type: ignore[arg-type]
            for (key, _), (resources, error) in zip(to_fetch, results, strict=True):
                kind = QUERIES[key][2]
                if error is None:
                    out.resources.extend(r for r in resources if _about_patient(r, patient_id))
                    kind_ok[kind] = kind_ok.get(kind, True)
                    out.sources[key] = "fetched"
                else:
                    kind_ok[kind] = False
                    out.sources[key] = "unavailable"
                    out.gaps.append(f"{KIND_LABEL[kind]} could not be read from the FHIR server ({error})")
        out.complete = {k for k, ok in kind_ok.items() if ok and k != "Patient"}
        out.gaps = list(dict.fromkeys(out.gaps))
        return out

    def _use_prefetch(
        self, key: str, value: Any, rtype: str, patient_id: str, out: Gathered
    ) -> tuple[bool, str | None]:
        """Add prefetched resources; return (usable, next-page URL if the Bundle was cut)."""
        if value is None:
            return True, None  # CDS Hooks: null = the client had no data for this key
        if not isinstance(value, dict) or value.get("resourceType") == "OperationOutcome":
            return False, None
        if value.get("resourceType") == "Bundle":
            resources = _entries(value, rtype)
            cont = _next_link(value)
        elif value.get("resourceType") == rtype:
            resources, cont = [value], None
        else:
            return False, None
        kept = [r for r in resources if _about_patient(r, patient_id)]
        if len(kept) < len(resources):
            out.gaps.append(f"{len(resources) - len(kept)} prefetched resource(s) about another patient were ignored")
        out.resources.extend(kept)
        return True, cont

    async def _fetch_many(
        self, jobs: list[tuple[str, str | None]], patient_id: str, base: str, token: str | None
    ) -> list[tuple[list[dict], str | None]]:
        deadline = time.monotonic() + self.budget_seconds
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"

        async def one(key: str, start: str | None) -> tuple[list[dict], str | None]:
            template, rtype, _ = QUERIES[key]
            url = start or f"{base}/{template.replace('{{context.patientId}}', patient_id)}"
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                    return await self._fetch_pages(url, rtype, base, headers), None
            except TimeoutError:
                return [], "timed out"
            except FetchError as e:
                return [], str(e)
            except httpx.HTTPError as e:
                return [], type(e).__name__

        return list(await asyncio.gather(*(one(k, s) for k, s in jobs)))

    async def _fetch_pages(self, url: str, rtype: str, base: str, headers: dict[str, str]) -> list[dict]:
        out: list[dict] = []
        pages = 0
        next_url: str | None = url
        while next_url:
            if pages >= self.page_cap:
                raise FetchError(f"more than {self.page_cap} pages; stopped")
            resp = await self.client.get(next_url, headers=headers)
            pages += 1
            if resp.status_code in (404, 410) and rtype == "Patient":
                raise FetchError("patient not found")
            if resp.status_code != 200:
                raise FetchError(f"HTTP {resp.status_code}")
            try:
                data = orjson.loads(resp.content)  # several times faster than json on large search pages
            except orjson.JSONDecodeError as e:
                raise FetchError("response was not JSON") from e
            if not isinstance(data, dict):
                raise FetchError("response was not a FHIR resource")
            if data.get("resourceType") == "Bundle":
                out.extend(_entries(data, rtype))
                next_url = _next_link(data)
                if next_url and not next_url.startswith(base):
                    raise FetchError("next page link points outside the FHIR server; not followed")
            elif data.get("resourceType") == rtype:
                out.append(data)
                next_url = None
            else:
                raise FetchError(f"unexpected {str(data.get('resourceType'))[:40]} in response")
        return out
