"""Gather one patient's FHIR resources: from the hook's prefetch, else from the FHIR server.

Every prefetch key that arrived is used as is (a bare resource or a searchset
Bundle; null means "no data"). Keys that did not arrive are fetched from
`fhirServer`, concurrently, following `Bundle.link[next]` up to a page cap.

What the service may contact is decided here: only FHIR base URLs on the
allow-list, no redirects, `next` links only to the same scheme, host and port
under the same base path (urls.py parses and checks each one). Responses are
streamed and their decoded bytes counted, per response and per hook, so a huge
page or a gzip bomb is cut (and said to be unreadable) before it is held. Resources that do
not refer to the context patient are set aside, whatever their source. Failures
never raise to the caller; they become `gaps` (short, data-free sentences that
say what could not be read, never why: the why goes to the log) and the kind of
resource stays "not gathered", so absence is never mistaken for "none on record".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from cds_service.fhir.bundles import continuation, entries, next_link, prefetched, read_prefetch, unasked_keys
from cds_service.fhir.capped import (
    ACCEPT_ENCODING,
    MAX_HOOK_BYTES,
    MAX_RESPONSE_BYTES,
    ByteBudget,
    FetchError,
    read_capped,
)
from cds_service.fhir.facts import ENTRY_TYPES, EntryCheck, PatientFacts
from cds_service.fhir.queries import QUERIES, SOURCE_LABEL, Search, prefetch_templates, searches
from cds_service.fhir.subjects import scope_to_patient
from cds_service.fhir.urls import AllowList, Origin, UnsafeUrl

__all__ = ["QUERIES", "Gathered", "Gatherer", "prefetch_templates", "scope_to_patient"]

log = logging.getLogger("trial_matcher")
MAX_PER_TYPE = 10_000  # settings.fhir_max_resources_per_type


@dataclass
class Gathered:
    resources: list[dict] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)  # resource types read completely: absence = "none on record"
    gaps: list[str] = field(default_factory=list)
    # key -> prefetch | fetched | unavailable | not needed | prefetch, not needed (for the log)
    sources: dict[str, str] = field(default_factory=dict)
    server_refused: bool = False  # fhirServer not on the allow-list
    entry_checked: bool = False  # the Patient and Conditions were checked against every cohort's entry
    outside: PatientFacts | None = None  # their facts, when they keep the patient outside every cohort

    @property
    def patient_found(self) -> bool:
        return any(r.get("resourceType") == "Patient" for r in self.resources)


@dataclass
class Read:
    """What one source (prefetch key) gave when fetched: its resources, and how completely."""

    resources: list[dict] = field(default_factory=list)
    error: str | None = None  # why it could not be read (for the log only)
    cut: bool = False  # newest-first searches stopped at the page cap: the newest are here, not all


@dataclass
class _Call:
    """What every request of one hook shares: the server, headers, deadline and byte budget."""

    base: Origin
    headers: dict[str, str]
    deadline: float
    budget: ByteBudget


@dataclass
class Gatherer:
    client: httpx.AsyncClient
    allow: AllowList
    page_cap: int = 20
    budget_seconds: float = 3.5
    observation_codes: frozenset[tuple[str, str]] = frozenset()  # what the criteria read (queries.py)
    max_response_bytes: int = MAX_RESPONSE_BYTES  # decoded bytes of one response
    max_hook_bytes: int = MAX_HOOK_BYTES  # decoded bytes of all the responses of one hook
    max_per_type: int = MAX_PER_TYPE  # resources of one type evaluated per hook; the rest counted as not read

    async def gather(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        entry_check: EntryCheck | None = None,
    ) -> Gathered:
        """`entry_check` (the hooks): given the Patient and Conditions read (scoped to the patient) and the types
        read completely, their facts when they keep the patient outside every cohort, else None. With it the
        Patient and Conditions are read first, from prefetch or the server, and the rest of the record only
        when some cohort opens, or may: a patient outside every cohort (most charts) costs two searches, not a
        dozen, and the rest of a prefetched record is never scoped. One inside costs one round trip more.
        Without it, every source is read at once."""
        out = Gathered()
        base = self._base(fhir_server, out)
        held: list[tuple[str, Any]] = []  # (type, prefetch value), in the order of QUERIES: the entry's first
        kind_ok: dict[str, bool] = {}  # resource type -> read completely
        to_fetch = self._from_prefetch(prefetch or {}, base, fhir_server, out, held, kind_ok)
        call = self._call(base, token) if to_fetch and base is not None else None
        first = [j for j in to_fetch if QUERIES[j[0]][1] in ENTRY_TYPES] if entry_check else to_fetch
        later = [j for j in to_fetch if j not in first]
        first_only = entry_check is not None  # the prefetched rest taken out only once the entry opens
        rest = [(kind, value) for kind, value in held if first_only and kind not in ENTRY_TYPES]
        raw = [res for kind, value in held if not first_only or kind in ENTRY_TYPES for res in prefetched(value, kind)]
        fetched: list[dict] = []
        if call is not None:
            await self._fetch_into(first, patient_id, call, out, fetched, kind_ok)
        if entry_check is not None:
            out.entry_checked = True
            out.outside = await self._check_entry(entry_check, raw + fetched, patient_id, base, kind_ok)
            if out.outside is not None:  # the rest is neither read nor fetched: never "none on record"
                raw, fetched = _entry_only(raw), _entry_only(fetched)
                _not_read(later, kind_ok, out)
                rest, later = [], []
        raw += [res for kind, value in rest for res in prefetched(value, kind)]
        if call is not None:
            await self._fetch_into(later, patient_id, call, out, fetched, kind_ok)
        out.resources, aside = scope_to_patient(raw + fetched, patient_id, base)
        if aside:
            out.gaps.append(f"{aside} resource(s) not clearly about this patient were set aside")
        out.resources = _at_most_per_type(out.resources, self.max_per_type, kind_ok, out.gaps)
        out.complete = _complete(kind_ok)
        out.gaps = list(dict.fromkeys(out.gaps))
        return out

    async def _check_entry(
        self, entry_check: EntryCheck, raw: list[dict], patient_id: str, base: Origin | None, kind_ok: dict[str, bool]
    ) -> PatientFacts | None:
        """`entry_check` of the Patient and Conditions read so far, as the report of an outside patient reads
        them: about this patient, at most `max_per_type` Conditions (the type incomplete when cut), and no
        other type read. In a worker thread: a long problem list is CPU time that would hold the event loop
        and every other request."""
        entry = scope_to_patient(_entry_only(raw), patient_id, base)[0]
        ok = {kind: read for kind, read in kind_ok.items() if kind in ENTRY_TYPES}
        entry = _at_most_per_type(entry, self.max_per_type, ok, [])
        return await asyncio.to_thread(entry_check, entry, _complete(ok))

    def _from_prefetch(
        self,
        prefetch: dict[str, Any],
        base: Origin | None,
        fhir_server: str | None,
        out: Gathered,
        held: list[tuple[str, Any]],
        kind_ok: dict[str, bool],
    ) -> list[tuple[str, str | None]]:
        """Judge what was prefetched, holding each value with its type in `held` (its resources are taken when
        needed); the sources left to fetch, as (key, checked URL to continue from, or None = from the
        start)."""
        if ignored := unasked_keys(prefetch):
            out.gaps.append(ignored)
        to_fetch: list[tuple[str, str | None]] = []
        for key, (_template, kind) in QUERIES.items():
            if key in prefetch:
                ok, cont = read_prefetch(prefetch[key], kind)
                held.append((kind, prefetch[key]))
                start = continuation(cont, base)
                if start:
                    to_fetch.append((key, start))
                    continue
                if cont:
                    out.gaps.append(f"prefetched {SOURCE_LABEL[kind]} was only the first page")
                    ok = False
                kind_ok[kind] = kind_ok.get(kind, True) and ok
                out.sources[key] = "prefetch"
            elif base is not None:
                to_fetch.append((key, None))
            else:
                kind_ok[kind] = False
                out.sources[key] = "unavailable"
                if not fhir_server:  # with a refused server, the allow-list gap already says why
                    out.gaps.append(f"{SOURCE_LABEL[kind]} was not prefetched, and no FHIR server was given to read it")
        return to_fetch

    async def _fetch_into(
        self,
        jobs: list[tuple[str, str | None]],
        patient_id: str,
        call: _Call,
        out: Gathered,
        raw: list[dict],
        kind_ok: dict[str, bool],
    ) -> None:
        """Fetch `jobs` at once (within the hook's one deadline and byte budget) into `raw`, saying on `out`
        what each source gave."""
        reads = await self._fetch_many(jobs, patient_id, call) if jobs else []
        for (key, _), read in zip(jobs, reads, strict=True):
            kind = QUERIES[key][1]
            raw.extend(read.resources)
            kind_ok[kind] = kind_ok.get(kind, True) and read.error is None and not read.cut
            out.sources[key] = "unavailable" if read.error is not None and not read.resources else "fetched"
            _note_read(read, kind, self.page_cap, out)

    def _base(self, fhir_server: str | None, out: Gathered) -> Origin | None:
        if not fhir_server:
            return None
        base = self.allow.check(fhir_server)
        if base is None:
            out.server_refused = True
            out.gaps.append("the EHR's FHIR server is not on this service's allow-list, so it was not contacted")
        return base

    def _call(self, base: Origin, token: str | None) -> _Call:
        """What every request of one hook shares: one deadline and one byte budget, whatever its phases."""
        deadline = asyncio.get_running_loop().time() + self.budget_seconds
        headers = {"Accept": "application/fhir+json", "Accept-Encoding": ACCEPT_ENCODING}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return _Call(base, headers, deadline, ByteBudget(self.max_hook_bytes))

    async def _fetch_many(self, jobs: list[tuple[str, str | None]], patient_id: str, call: _Call) -> list[Read]:
        """These sources' searches at once."""
        base = call.base

        async def source(key: str, start: str | None) -> Read:
            rtype = QUERIES[key][1]
            found = [Search(key, start)] if start else searches(key, patient_id, self.observation_codes)
            plan = [(s.path if start else f"{base.url}/{s.path}", s.newest_first) for s in found]
            reads = await asyncio.gather(*(self._read(u, rtype, nf, call) for u, nf in plan))
            if found[0].plain and any(r.error in ("HTTP 400", "HTTP 414") for r in reads):
                # a strict server refuses a parameter it does not support (or a long URL): ask the plain search
                log.info("refined FHIR search refused; reading the plain search", extra={"resource_type": rtype})
                reads = [await self._read(f"{base.url}/{found[0].plain}", rtype, False, call)]
            return _merge(reads)

        return list(await asyncio.gather(*(source(k, s) for k, s in jobs)))

    async def _read(self, url: str, rtype: str, newest_first: bool, call: _Call) -> Read:
        """One search, all its pages. A newest-first search keeps what it read when cut short."""
        read = Read()
        try:
            async with asyncio.timeout_at(call.deadline):
                read.cut = await self._fetch_pages(url, rtype, call, read.resources, newest_first)
        except TimeoutError:
            read.error = "timed out"
        except FetchError as e:
            read.error = str(e)
        except httpx.HTTPError as e:
            read.error = type(e).__name__
        if read.error is not None and not newest_first:
            read.resources = []  # an unsorted part of a search could hide a newer contrary record
        return read

    async def _get(self, url: str, call: _Call) -> tuple[int, bytes]:
        """Status and decoded body of one GET, streamed: a body over the caps is never held whole."""
        async with self.client.stream("GET", url, headers=call.headers) as resp:
            if resp.status_code != 200:
                return resp.status_code, b""
            return 200, await read_capped(resp, self.max_response_bytes, call.budget)

    async def _fetch_pages(self, url: str, rtype: str, call: _Call, out: list[dict], newest_first: bool) -> bool:
        """Follow next links from `url`, appending resources to `out`; True when cut at the page cap."""
        pages = 0
        next_url: str | None = url
        while next_url:
            if pages >= self.page_cap:
                if newest_first:
                    return True
                raise FetchError(f"more than {self.page_cap} pages; stopped")
            status, content = await self._get(next_url, call)
            pages += 1
            if status in (404, 410) and rtype == "Patient":
                raise FetchError("patient not found")
            if status != 200:
                raise FetchError(f"HTTP {status}")
            try:
                data = orjson.loads(content)  # several times faster than json on large search pages
            except orjson.JSONDecodeError as e:
                raise FetchError("response was not JSON") from e
            if not isinstance(data, dict):
                raise FetchError("response was not a FHIR resource")
            if data.get("resourceType") == "Bundle":
                out.extend(entries(data, rtype))
                link = next_link(data)
                try:
                    next_url = call.base.follow(link) if link else None
                except UnsafeUrl as e:
                    raise FetchError("next page link points outside the FHIR server; not followed") from e
            elif data.get("resourceType") == rtype:
                out.append(data)
                next_url = None
            else:
                raise FetchError("unexpected resource type in response")
        return False


def _at_most_per_type(resources: list[dict], cap: int, kind_ok: dict[str, bool], gaps: list[str]) -> list[dict]:
    """The first `cap` resources of each type, in the order they came (searches ask newest first).

    Evaluation time grows with the record, and 32 MB of prefetch can hold 120,000 Conditions (15 s of
    CPU); no real chart needs more than `cap` of one type. What is cut leaves its type incomplete, so
    what was read still counts and nothing cut is taken for "none on record".
    """
    seen: dict[str, int] = {}
    kept: list[dict] = []
    for res in resources:
        rtype = str(res.get("resourceType"))
        seen[rtype] = seen.get(rtype, 0) + 1
        if seen[rtype] <= cap:
            kept.append(res)
    for rtype, n in seen.items():
        if n > cap:
            kind_ok[rtype] = False
            gaps.append(f"{n - cap} {rtype} resource(s) beyond the {cap} read per request were not read")
    return kept


def _merge(reads: list[Read]) -> Read:
    """One source's searches as one read; a resource matched by two searches counts once."""
    if len(reads) == 1:
        return reads[0]
    seen: set[tuple[Any, Any]] = set()
    merged = Read(error=next((r.error for r in reads if r.error is not None), None), cut=any(r.cut for r in reads))
    for read in reads:
        for res in read.resources:
            rid = (res.get("resourceType"), res.get("id"))
            if rid[1] is None or rid not in seen:
                seen.add(rid)
                merged.resources.append(res)
    return merged


def _note_read(read: Read, kind: str, page_cap: int, out: Gathered) -> None:
    """Say on the card what a fetch could not read (never why: the reason goes to the operator's log)."""
    label = SOURCE_LABEL[kind]
    if read.error is not None:
        log.warning("FHIR read failed", extra={"resource_type": kind, "error_type": read.error})
        if read.resources:
            out.gaps.append(f"{label} could be read only in part from the FHIR server (the newest results were)")
        else:
            out.gaps.append(f"{label} could not be read from the FHIR server")
    elif read.cut:
        out.gaps.append(f"{label}: only the newest results were read ({page_cap} pages per search)")


def _entry_only(resources: list[dict]) -> list[dict]:
    return [r for r in resources if r.get("resourceType") in ENTRY_TYPES]


def _not_read(later: list[tuple[str, str | None]], kind_ok: dict[str, bool], out: Gathered) -> None:
    """The record's other types, for a patient outside every cohort: whatever was prefetched of them is not
    read, and what was still to fetch is not fetched (the log's sources say so); none is complete."""
    for key, _ in later:
        out.sources[key] = "not needed"
    for key, (_template, kind) in QUERIES.items():
        if kind not in ENTRY_TYPES:
            kind_ok[kind] = False
            if out.sources.get(key) == "prefetch":
                out.sources[key] = "prefetch, not needed"


def _complete(kind_ok: dict[str, bool]) -> set[str]:
    """The types read completely, whose absence means "none on record" (the Patient is not a source)."""
    return {k for k, ok in kind_ok.items() if ok and k != "Patient"}
