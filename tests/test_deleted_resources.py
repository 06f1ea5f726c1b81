"""Resources an `_since` export says were deleted (the Bulk Data manifest's `deleted` files) leave the
copy of the export `--since last` evaluates from: a diagnosis deleted on the server no longer counts."""

from __future__ import annotations

import asyncio
from datetime import date

import orjson
import pytest
import respx

from cds_service.screening.export import DELETED, BulkExport, ExportError
from cds_service.screening.exported import clear_export
from cds_service.worklist.mirror import Mirror, deletions
from cds_service.worklist.remember import from_mirror, touched_patients
from cds_service.worklist.runs import REMOVED
from demo import synthetic as syn

AS_OF = date(2026, 11, 23)
BASE = "http://127.0.0.1:9999/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=1"


def _bundle(*urls: str, method: str = "DELETE") -> bytes:
    entries = [{"request": {"method": method, "url": u}} for u in urls]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (_bundle("Condition/c-1"), [("Condition", "c-1")]),
        (_bundle("Patient/p1", "Observation/o.2"), [("Patient", "p1"), ("Observation", "o.2")]),
        (_bundle(f"{BASE}/Condition/c-1"), [("Condition", "c-1")]),  # a full URL on the exporting server
        (_bundle("http://attacker.example/fhir/Condition/c-1"), []),  # another server's: not ours to delete
        (_bundle(f"{BASE}/../other/Condition/c-1"), []),  # another base on the same host
        (_bundle("../Condition/c-1"), []),
        (_bundle(f"{BASE}/Condition%2Fc-1"), []),
        (_bundle("Condition/c-1/_history/3"), [("Condition", "c-1")]),
        (_bundle("Condition/c-1", method="PUT"), []),  # not a deletion
        (_bundle("Encounter/e1"), []),  # a type no criterion reads
        (_bundle("Condition/has space"), []),  # not a FHIR id
        (_bundle("Condition"), []),
        (b'{"resourceType":"Bundle","entry":"x"}', []),
        (b'{"resourceType":"Condition","id":"c-1"}', []),  # not a Bundle
        (b"not json", []),
        (b"[1, 2]", []),
    ],
)
def test_a_deleted_file_line_names_the_resources_it_deletes(line, want):
    assert deletions(line, BASE) == want


def _export(folder, patients: list[list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for resources in patients:
        for r in resources:
            with (folder / f"{r['resourceType']}.ndjson").open("ab") as f:
                f.write(orjson.dumps(r) + b"\n")


def _deleted(folder, *urls: str) -> None:
    (folder / DELETED).mkdir(parents=True)
    (folder / DELETED / "Bundle.000.ndjson").write_bytes(_bundle(*urls) + b"\n")


def test_deleted_resources_leave_the_mirror_and_their_patients_are_read_again(catalog, tmp_path):
    a, b, c = (syn.eligible_patient(AS_OF, pid) for pid in ("da", "db", "dc"))
    _export(tmp_path / "full", [a, b, c])
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(tmp_path / "full")
    sle = next(r["id"] for r in a if r["resourceType"] == "Condition")
    before = {t.id: t for t in catalog.report(catalog.facts(a, "da"), AS_OF).trials}
    assert any(t.cohort and t.cohort.outcome == "in" for t in before.values())

    changes = tmp_path / "changes"
    changes.mkdir()
    _deleted(changes, f"Condition/{sle}", "Patient/db", "Condition/not-in-the-mirror")
    reread = from_mirror(mirror, changes, set(), None, catalog, AS_OF, None)

    assert reread.touched == {"da", "db"}  # dc untouched; a deletion the mirror never held touches nobody
    assert reread.not_found == 1  # db's Patient is gone: no longer on record
    record = dict(mirror.records({"da"}))["da"]
    assert sle not in {r["id"] for r in record if r["resourceType"] == "Condition"}
    # da's rows are those of their record without the deleted diagnosis: outside every trial's cohort
    without = [r for r in a if r.get("id") != sle]
    want = {t.id: t.status for t in catalog.report(catalog.facts(without, "da"), AS_OF).trials}
    mine = {r["trial"]: r["status"] for r in reread.rows if r["patient"] == "da"}
    assert mine == want != {t: r.status for t, r in before.items()}
    # db is gone: a row per trial that stands over their earlier ones, and no one else is read again
    assert {(r["patient"], r["status"]) for r in reread.rows if r["patient"] != "da"} == {("db", REMOVED)}
    assert reread.gone == {"db"}


def test_without_the_mirror_deleted_patients_are_read_again(tmp_path):
    _export(tmp_path / "changes", [[syn.patient("ch", "1980-01-01", "female")]])
    _deleted(tmp_path / "changes", "Patient/gone", "Condition/c-9")
    assert touched_patients(tmp_path / "changes") == {"ch", "gone"}


def test_an_earlier_exports_deletions_are_cleared_with_its_files(tmp_path):
    _export(tmp_path, [[syn.patient("p1", "1980-01-01", "female")]])
    _deleted(tmp_path, "Condition/c-1")
    assert clear_export(tmp_path) == 2
    assert not list(tmp_path.glob("*.ndjson")) and not list((tmp_path / DELETED).glob("*.ndjson"))


def _manifest(deleted_url: str) -> dict:
    return {
        "transactionTime": "2026-11-23T10:00:00Z",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": f"{BASE}/Binary/1"}],
        "deleted": [{"type": "Bundle", "url": deleted_url}],
    }


@respx.mock
def test_the_manifests_deleted_files_are_kept_apart_from_the_data(tmp_path):
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": STATUS})
    respx.get(STATUS).respond(200, json=_manifest(f"{BASE}/Binary/2"))
    respx.delete(STATUS).respond(202)
    respx.get(f"{BASE}/Binary/1").respond(200, content=b'{"resourceType":"Patient","id":"p1"}\n')
    respx.get(f"{BASE}/Binary/2").respond(200, content=_bundle("Condition/c-1") + b"\n")
    files = asyncio.run(BulkExport(BASE, "tok", since="2026-11-01T00:00:00Z").run(tmp_path))
    assert sorted(str(f.relative_to(tmp_path)) for f in files) == ["Patient.000.ndjson", f"{DELETED}/Bundle.000.ndjson"]
    assert deletions((tmp_path / DELETED / "Bundle.000.ndjson").read_bytes()) == [("Condition", "c-1")]


@respx.mock
def test_a_deleted_file_off_the_server_is_refused(tmp_path):
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": STATUS})
    respx.get(STATUS).respond(200, json=_manifest("http://attacker.example/deleted"))
    elsewhere = respx.get(url__startswith="http://attacker.example").respond(200)
    with pytest.raises(ExportError, match="outside"):
        asyncio.run(BulkExport(BASE, "tok", since="2026-11-01T00:00:00Z").run(tmp_path))
    assert not elsewhere.called
