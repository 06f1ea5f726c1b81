"""Keeping a screen in the store, and re-screening only what changed since the last one (`--since last`).

An incremental run asks the server's `$export` for what changed after the last run's transactionTime.
The changed resources name the patients they belong to; each of those patients, and each patient whose
temporary bar has lifted since the last run, is read again in full through the same FHIR searches the
hook uses (allow-listed to the server on the command line, bounded like a hook) and re-evaluated. The
rows of everyone else stand. A Medication changed on its own (no patient) is not followed to the
patients whose orders name it; the next full screen picks that up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.trials import Trial
from cds_service.screening.bulk import ReadLimits, ReadStats, _open, classify, export_files, lines
from cds_service.screening.funnel import row
from cds_service.screening.run import cohort_first
from cds_service.settings import Settings
from cds_service.worklist.mirror import Mirror, deleted_in
from cds_service.worklist.runs import REMOVED, Run, RunStore, StoredRow, pseudonym


class SetupError(ValueError):
    """The site's configuration does not allow this (said in one line)."""


def patient_key(settings: Settings) -> str | None:
    """The HMAC key when the site stores pseudonyms, else None (ids as given)."""
    if settings.worklist_patient_ids != "pseudonymised":
        return None
    if settings.patient_id_salt is None or not settings.patient_id_salt.get_secret_value():
        raise SetupError("TRIAL_MATCHER_WORKLIST_PATIENT_IDS=pseudonymised needs TRIAL_MATCHER_PATIENT_ID_SALT")
    return settings.patient_id_salt.get_secret_value()


def stored_rows(rows: Iterable[dict[str, Any]], key: str | None) -> Iterator[dict[str, Any]]:
    """The rows as stored, one at a time (a health system's screen is millions of them)."""
    return ({**r, "patient": pseudonym(r["patient"], key)} if key else r for r in rows)


def remember(
    settings: Settings,
    rows: Iterable[dict[str, Any]],
    as_of: date,
    source: str,
    kind: str = "full",
    transaction_time: str | None = None,
    mirror: str | None = None,
) -> int:
    """Store a run's rows (each patient's rows together, as a screen gives them); the run id."""
    key = patient_key(settings)
    run = {"as_of": as_of.isoformat(), "source": source, "kind": kind, "transaction_time": transaction_time,
           "pseudonymised": int(key is not None), "mirror": mirror}  # fmt: skip  # patients: counted as stored
    return RunStore(settings.database_url).save(run, stored_rows(rows, key))


def last_run_of(store: RunStore, source: str) -> Run | None:
    """The newest run of this server that an incremental export can start from."""
    return next((r for r in reversed(store.runs(source)) if r.transaction_time), None)


def touched_patients(folder: Path, server: str | None = None) -> set[str]:
    """The patients the changed resources of an `_since` export belong to, and the Patients it says were
    deleted (other deleted resources name no patient: only the mirror knows whose they were)."""
    found = {rid for rtype, rid in deleted_in(folder, server) if rtype == "Patient"}
    stats = ReadStats()
    max_line = ReadLimits.from_settings().max_line_bytes
    for _, path in export_files(folder):
        with _open(path) as f:
            for line in lines(f, max_line, stats):
                kind, pid = classify(line)
                if pid is not None and kind in ("patient", "record"):
                    found.add(pid)
    return found


def lifted(state: dict[tuple[str, str], StoredRow], since: date, as_of: date) -> set[str]:
    """Patients (as stored) with a temporary bar that lifted after the last run's date, by this run's."""
    return {p for (p, _), r in state.items() if r.eligible_from is not None and since < r.eligible_from <= as_of}


def from_mirror(
    mirror: Mirror, changes: Path, bars: set[str], key: str | None, catalog: Catalog, as_of: date,
    trials: list[str] | None, server: str | None = None,
) -> Reread:  # fmt: skip
    """Remove what the export says was deleted, write the changes over the mirror, and evaluate the
    patients they touch and those whose bar lifted (stored as pseudonyms when the site pseudonymises:
    matched against the mirror's ids)."""
    touched = mirror.forget(changes, server)  # first: a resource deleted and then created again is in the output
    touched |= mirror.take(changes)
    if key is not None:
        bars = {pid for pid in mirror.patients() if pseudonym(pid, key) in bars}
    wanted = touched | bars
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    shared = catalog.normalizer.shared_medications(mirror.medications())  # indexed once, not once a patient
    for pid, resources in mirror.records(wanted, medications=False):
        seen.add(pid)
        rows.extend(row(pid, r) for r in cohort_first(catalog, pid, resources, as_of, trials, shared=shared))
    rows += removed(wanted - seen, catalog.chosen(trials))
    return Reread(rows, len(wanted - seen), touched, bars, wanted - seen)


@dataclass
class Reread:
    rows: list[dict[str, Any]]
    not_found: int
    touched: set[str] = field(default_factory=set)
    lifted: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)  # read again, and no longer on the server


def removed(gone: set[str], trials: list[Trial]) -> list[dict[str, Any]]:
    """A row per trial for each patient no longer on the server: it stands over their earlier rows, so they
    leave the eligible lists (runs.REMOVED)."""
    empty = {"eligible_from": "", "pass": 0, "fail": 0, "unknown": 0, "review": 0, "failed": "", "unknowns": "",
             "outcomes": ""}  # fmt: skip
    return [{"patient": p, "trial": t.id, "status": REMOVED, **empty} for p in sorted(gone) for t in trials]


async def reevaluate(
    patients: set[str], server: str, token: str | None, catalog: Catalog, as_of: date, settings: Settings
) -> Reread:
    """Read each patient in full through the hook's searches and evaluate them; four at a time."""
    import httpx  # here: a screen that only stores its run (every `screen`) never pays httpx's import

    from cds_service.fhir.gather import Gatherer
    from cds_service.fhir.urls import AllowList

    allow = AllowList.parse(server)
    http = httpx.AsyncClient(timeout=settings.fhir_timeout_seconds * 10, follow_redirects=False, trust_env=False)
    rows: list[dict[str, Any]] = []
    missing: set[str] = set()
    limit = asyncio.Semaphore(4)
    async with http as client:
        gatherer = Gatherer(client, allow, settings.fhir_page_cap, budget_seconds=120.0,
                            observation_codes=frozenset(catalog.mappings.obs_index))  # fmt: skip

        async def one(pid: str) -> None:
            # the rest of a record only for a patient whose Conditions open some cohort (most open none)
            async with limit:
                got = await gatherer.gather(pid, None, server, token, catalog.entry_check(pid))
            if not got.patient_found:
                missing.add(pid)
                return
            rows.extend(row(pid, r) for r in catalog.verdicts(catalog.gathered_facts(got, pid), as_of))

        await asyncio.gather(*(one(p) for p in sorted(patients)))
    rows += removed(missing, catalog.chosen())
    rows.sort(key=lambda r: (r["patient"], r["trial"]))
    return Reread(rows, len(missing), gone=missing)
