"""Small helpers for tests: mutating synthetic patients, reading cards, an open service client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from cds_service.api.app import create_app
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.report import CriterionResult, TrialResult
from cds_service.fhir.queries import QUERIES
from cds_service.settings import Settings


@contextmanager
def open_service(folder: Path, name: str = "db", **settings) -> Iterator[TestClient]:
    """The service with auth off on its own SQLite store in `folder` (or the `database_url` given), as a test
    client."""
    settings.setdefault("database_url", f"sqlite:///{folder / name}.sqlite3")
    s = Settings(auth_required=False, log_level="WARNING", **settings)
    with TestClient(create_app(s)) as c:
        yield c


def codes_of(res: dict) -> set[str]:
    cc = res.get("code") or res.get("medicationCodeableConcept") or res.get("vaccineCode") or {}
    return {c.get("code") for c in cc.get("coding", [])}


def drop(resources: list[dict], *codes: str) -> list[dict]:
    """Remove every resource carrying any of these codes."""
    return [r for r in resources if not (codes_of(r) & set(codes))]


def replace(resources: list[dict], code: str, new: dict) -> list[dict]:
    return [*drop(resources, code), new]


def set_patient(resources: list[dict], **fields) -> list[dict]:
    out = []
    for r in resources:
        if r["resourceType"] == "Patient":
            r = {**r, **fields}
            r = {k: v for k, v in r.items() if v is not None}
        out.append(r)
    return out


def evaluate(catalog: Catalog, resources: list[dict], trial_id: str, as_of: date) -> TrialResult:
    facts = catalog.facts(resources, "p1")
    return catalog.engine.evaluate(facts, catalog.trials[trial_id], as_of)


def criterion(catalog: Catalog, resources: list[dict], trial_id: str, cid: str, as_of: date) -> CriterionResult:
    """One criterion's outcome within the trial's evaluation; outside the cohort (no criterion is read
    there) the criterion alone, so criterion tests also hold for records without the diagnosis."""
    result = evaluate(catalog, resources, trial_id, as_of)
    found = next((c for c in result.criteria if c.id == cid), None)
    if found is not None:
        return found
    assert result.cohort is not None and result.cohort.outcome != "in"
    trial = catalog.trials[trial_id]
    c = next(c for c in trial.criteria if c.id == cid)
    return catalog.engine.criterion(catalog.facts(resources, "p1"), c, as_of)


# The five seed trials. Tests that pin down verdicts the demo patients were built to show name them;
# every other expectation is derived from the catalogue, so adding a trial file keeps the suite green.
SEED_TRIALS = frozenset({"NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119", "NCT06676631"})


def seed_only(ids) -> set[str]:
    """The seed trials among `ids` (trial ids, or a dict keyed by them)."""
    return {t for t in ids if t in SEED_TRIALS}


def rules_mention(catalog: Catalog, trial_id: str, name: str) -> bool:
    """Whether a trial's rules name this map entry (a class, group or variable)."""
    trial = catalog.trials[trial_id]
    return any(name in str(c.rule) for c in trial.criteria if c.rule is not None)


# The four prefetch keys of the CDS Hooks examples, and the others discovery names (from the code, so a new
# source joins every test that sends "all keys")
CLASSIC_KEYS = ("patient", "conditions", "observations", "medications")
OPTIONAL_KEYS = tuple(k for k in QUERIES if k not in CLASSIC_KEYS)


def plain(markdown: str) -> str:
    """Card Markdown as a reader sees it: CommonMark backslash escapes and the word joiners md_escape puts
    after `@` removed, so tests can look for the words a clinician reads."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def details(response) -> str:
    """Every card's detail in a hook answer, as read (see `plain`)."""
    return "\n".join(plain(c.get("detail", "")) for c in response.json().get("cards", []))


def ext(card: dict) -> dict:
    """Our card extension (namespaced, as CDS Hooks asks): trialId, status, eligibleFrom, orderImpact."""
    return card["extension"]["org.trialmatcher"]


def draft_order(text: str, patient: str = "p1", oid: str = "draft-1") -> dict:
    """A draft MedicationRequest named by text only, as order hooks receive them in draftOrders."""
    return {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"text": text},
    }


def reading_settings(base: str, db: Path, token: str | None = None, **overrides) -> Settings:
    """Settings of a service that reads one real FHIR server (auth off, generous budget for a test machine)."""
    values = {
        "database_url": f"sqlite:///{db}",
        "auth_required": False,
        "allowed_fhir_servers": base,
        "fhir_base_url": base,
        "fhir_token": token,
        "log_level": "WARNING",
        "hook_budget_seconds": 20,
        "fhir_timeout_seconds": 15,
        **overrides,
    }
    return Settings(**values)


def delete_bundle(*urls: str) -> bytes:
    """A transaction Bundle of DELETE entries, as a Bulk Data manifest's `deleted` files hold."""
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "DELETE", "url": u}} for u in urls]})  # fmt: skip


def export_folder(path: Path, resources: list[dict], deleted: list[str] | tuple[str, ...] = ()) -> Path:
    """A Bulk Data export on disk: the resources in one NDJSON file a type, and the DELETE urls of
    `deleted` under the folder's `deleted/` (screening/export.py)."""
    from cds_service.screening.export import DELETED

    path.mkdir(parents=True)
    for r in resources:
        with (path / f"{r['resourceType']}.ndjson").open("ab") as f:
            f.write(orjson.dumps(r) + b"\n")
    if deleted:
        (path / DELETED).mkdir()
        (path / DELETED / "Bundle.000.ndjson").write_bytes(delete_bundle(*deleted) + b"\n")
    return path


def screen_kept(r: object) -> tuple:
    """What a screen keeps of a trial's result (a TrialResult or a TrialVerdict): id, status, the date a bar
    lifts, the cohort entry, every criterion's outcome and the counts."""
    cohort = r.cohort.model_dump() if r.cohort is not None else None  # type: ignore[attr-defined]
    return (
        r.id,  # type: ignore[attr-defined]
        r.status,  # type: ignore[attr-defined]
        r.eligible_from,  # type: ignore[attr-defined]
        cohort,
        [(c.id, c.outcome) for c in r.criteria],  # type: ignore[attr-defined]
        [r.count(o) for o in ("pass", "fail", "unknown", "review")],  # type: ignore[attr-defined]
    )


def res_content(r: object) -> tuple:
    """A rule result's whole content, whatever sequence holds its lists (an empty one is a shared tuple)."""
    lists = (r.missing, r.notes, r.why, r.standing)  # type: ignore[attr-defined]
    return (r.truth, r.until, [e.model_dump() for e in r.evidence], *(list(x) for x in lists))  # type: ignore[attr-defined]
