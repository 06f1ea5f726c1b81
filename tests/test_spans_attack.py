"""Attacks on the screen's partition pass across workers in byte spans (screening/spans.py, route.py, run.py)
and on the deletions an `_since` export reports (export.py, worklist/mirror.py, worklist/remember.py)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import orjson
import pytest
from helpers import delete_bundle, export_folder
from test_prefilter_attack import _as, _diff, _export, _med_request, _ordered, _whole

from cds_service.screening.bulk import COUNTS, ReadLimits, ReadStats, patients_in
from cds_service.screening.prefilter import CohortFilter
from cds_service.screening.route import part_of, partition
from cds_service.screening.run import opens_an_entry, screen
from cds_service.screening.spans import Span, span_blocks, spans_of
from cds_service.settings import REPO_ROOT
from demo.load import demo_bundles, resources

DIRS = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)
MED = {"resourceType": "Medication", "id": "m1",
       "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "121191"}]}}  # fmt: skip


def _one_router(catalog, folder: Path, limits: ReadLimits) -> ReadStats:
    """The read counts of one router over the whole export (route.partition), and of the workers reading
    the partitions after it, as the screen did before the partition pass was shared."""
    with tempfile.TemporaryDirectory() as tmp:
        cohort = CohortFilter(opens_an_entry(catalog, None))
        parts, stats = partition(folder, Path(tmp), 4, limits, cohort)
        inside = {k.decode() for k in cohort.added_at}
        for i, part in enumerate(parts):
            counted = ReadStats()
            mine = {p for p in inside if part_of(p, 4) == i}
            list(patients_in(part, limits, counted.too_large, mine, counted))
            stats.absorb(counted)
    return stats


def _counts(s: ReadStats) -> dict:
    return {**{f: getattr(s, f) for f in COUNTS}, "patients": sorted(s.patients), "too_large": sorted(s.too_large)}


def _records(as_of) -> dict[str, list[dict]]:
    """The demo records, twice: as given (some inside some cohort) and without their Conditions (outside)."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    out = {}
    for i, res in enumerate(demo.values()):
        out[f"in{i}"] = _as(res, f"in{i}") + [_med_request(f"in{i}")]
        out[f"out{i}"] = _as(res, f"out{i}", conditions=False)
    return out


def _spanned(monkeypatch, n: int) -> None:
    monkeypatch.setattr("cds_service.screening.spans.SPAN_BYTES", n)
    monkeypatch.setattr("cds_service.screening.run.ENTRY_SPAN_BYTES", n)


# --- spans.py on its own --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 61])
@pytest.mark.parametrize("cap", [4, 10, 1000])
def test_spans_hold_every_line_once_whatever_the_cuts_and_the_line_cap(tmp_path, size, cap):
    """Lines of every length (some over the cap, some exactly at it), CRLF, blank lines, no final newline:
    the spans' lines together are the whole file's, each once, at its offset, and `too_long` the same."""
    data = b"a\nbb\r\n\n" + b"x" * 9 + b"\n" + b"y" * 10 + b"\n" + b"z" * 11 + b"\nq\r\n" + b"w" * 25 + b"\nend"
    path = tmp_path / "f.ndjson"
    path.write_bytes(data)
    whole_stats, span_stats = ReadStats(), ReadStats()
    whole = list(span_blocks(Span(path), cap, whole_stats))
    got = [b for s in spans_of([path], 1, fixed=size) for b in span_blocks(s, cap, span_stats)]
    assert b"".join(b for _, b in got) == b"".join(b for _, b in whole)
    assert span_stats.too_long == whole_stats.too_long
    for offset, buf in got:  # each block at its own offset in the file
        assert data[offset : offset + len(buf)].rstrip(b"\n") == buf.rstrip(b"\n")[: len(data) - offset]


# --- the whole screen: rows and counts ------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "span"), [(1, 1500), (2, 700), (2, 97)])
def test_tiny_spans_over_hostile_files_screen_as_each_whole_record_and_count_as_one_router(
    catalog, as_of, tmp_path, monkeypatch, workers, span
):
    """Every Condition in a file named for another type and after the lines it brings in, Patients in an
    Observation file, Observations in the Patient, Condition and Observation files, CRLF, a line over the cap crossing
    cuts, an empty file, a gzip entry file, a file without its final newline, the shared Medication written
    in several files: rows are those of each whole record; counts those of one router."""
    records = _records(as_of)
    lines = {"Patient.ndjson": [], "Condition.ndjson": [], "Observation.ndjson": [], "zz.ndjson": []}
    for i, res in enumerate(records.values()):
        for j, r in enumerate(_ordered(res)):
            text = orjson.dumps(r)
            if r["resourceType"] == "Condition":
                lines["zz.ndjson"].append(text)  # Conditions last, in a file of no entry type
            elif r["resourceType"] == "Patient":
                lines["Observation.ndjson"].append(text)
            else:
                # entry files are parsed whole (route.is_entry_file); the Observation file's lines are filtered
                lines[["Patient.ndjson", "Condition.ndjson", "Observation.ndjson"][(i + j) % 3]].append(text)
    cap = 3000
    long = {**records["in0"][1], "id": "long", "note": [{"text": "L" * 5000}]}
    lines["Patient.ndjson"].insert(len(lines["Patient.ndjson"]) // 2, orjson.dumps(long))
    for name in ("Patient.ndjson", "zz.ndjson"):
        lines[name].append(orjson.dumps(MED))
    files = {
        "Patient.ndjson": b"\r\n".join(lines["Patient.ndjson"]) + b"\r\n",
        "Condition.000.ndjson.gz": b"\n".join(lines["Condition.ndjson"]) + b"\n",
        "Condition.001.ndjson": b"",
        "Observation.ndjson": b"\n".join(lines["Observation.ndjson"]) + b"\n",
        "zz.ndjson": b"\n".join(lines["zz.ndjson"]),  # no final newline
    }
    folder = _export(tmp_path, files)
    limits = ReadLimits(max_line_bytes=cap)
    every = [x for v in lines.values() for x in v if len(x) <= cap]
    reference = _one_router(catalog, folder, limits)
    _spanned(monkeypatch, span)
    got = screen(folder, DIRS, as_of, workers=workers, limits=limits, catalog=catalog)
    assert _diff(got.rows, _whole(catalog, every, as_of)) == []
    assert _counts(got.stats) == _counts(reference)
    assert got.stats.too_long == 1 and got.stats.outside_cohort > 0


# --- deletions an `_since` export reports (change 2) ----------------------------------------------------

import asyncio  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import respx  # noqa: E402

from cds_service.screening.export import DELETED, BulkExport  # noqa: E402
from cds_service.worklist.mirror import Mirror, deletions  # noqa: E402
from cds_service.worklist.remember import from_mirror, remember  # noqa: E402
from cds_service.worklist.runs import RunStore  # noqa: E402

BASE = "http://127.0.0.1:9999/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=1"


def _store(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    return SimpleNamespace(database_url=url, worklist_patient_ids="plain", patient_id_salt=None), RunStore(url)


def _rows(catalog, records: dict[str, list[dict]], shared: list[dict], as_of) -> list[dict]:
    from cds_service.screening.funnel import row

    return [
        row(pid, t)
        for pid, res in records.items()
        for t in catalog.report(catalog.facts(res + shared, pid), as_of).trials
    ]


def test_a_deleted_patient_leaves_the_mirror_with_its_record(as_of, catalog, tmp_path):
    # FAILS: Mirror.forget deletes only the Patient row; the record the mirror docstring says leaves with it stays
    res = _as(resources(next(iter(demo_bundles(as_of).values()))), "gone")
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", res))
    changes = export_folder(tmp_path / "changes", [], ["Patient/gone"])
    from_mirror(mirror, changes, set(), None, catalog, as_of, None)
    with sqlite3.connect(mirror.path) as conn:
        left = conn.execute("SELECT rtype, id FROM res WHERE patient = 'gone'").fetchall()
    assert left == []


def test_a_deleted_patient_is_no_longer_eligible_in_the_stored_state(as_of, catalog, tmp_path):
    # FAILS: a deleted Patient gets no row in the incremental run (mirror.records skips them, counted
    # not_found), so RunStore.state keeps their last full run's rows: still eligible in the worklist
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    records = {f"p{i}": _as(res, f"p{i}") for i, res in enumerate(demo.values())}
    rows = _rows(catalog, records, [], as_of)
    gone = next((r["patient"] for r in rows if r["status"] in ("likely-eligible", "possibly-eligible")), None)
    assert gone is not None, "no demo record is eligible for any trial"
    settings, store = _store(tmp_path)
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", [r for res in records.values() for r in res]))
    remember(settings, rows, as_of, BASE, "full", "2026-11-01T00:00:00Z", str(mirror.path))
    changes = export_folder(tmp_path / "changes", [], [f"Patient/{gone}"])
    reread = from_mirror(mirror, changes, set(), None, catalog, as_of, None)
    assert gone in reread.touched
    remember(settings, reread.rows, as_of, BASE, "incremental", "2026-11-22T00:00:00Z", str(mirror.path))
    runs = store.runs()
    still = [t for (p, t), r in store.state(runs[-1], runs).items() if p == gone and r.eligible_on(as_of)]
    assert still == []
    # the coordinator's worklist says so, and the screening log does not count them as screened
    from cds_service.worklist import changes

    listed = {(e.list, e.criterion) for e in changes.build(store, 30).entries if e.patient == gone}
    assert listed == {("no-longer-eligible", "no longer on record")}


def test_a_deleted_shared_medication_reevaluates_the_patients_whose_orders_name_it(as_of, catalog, tmp_path):
    # FAILS: Mirror.forget touches only the deleted resource's own patient; a Medication has none, so the
    # patients whose orders name it keep rows that counted it (remember.from_mirror)
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    records = {f"m{i}": _as(res, f"m{i}") + [_med_request(f"m{i}")] for i, res in enumerate(demo.values())}
    with_med, without = _rows(catalog, records, [MED], as_of), _rows(catalog, records, [], as_of)
    if with_med == without:
        pytest.skip("the Medication changes no demo record's rows")
    settings, store = _store(tmp_path)
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", [MED, *(r for res in records.values() for r in res)]))
    remember(settings, with_med, as_of, BASE, "full", "2026-11-01T00:00:00Z", str(mirror.path))
    changes = export_folder(tmp_path / "changes", [], ["Medication/m1"])
    reread = from_mirror(mirror, changes, set(), None, catalog, as_of, None)
    remember(settings, reread.rows, as_of, BASE, "incremental", "2026-11-22T00:00:00Z", str(mirror.path))
    runs = store.runs()
    state = {k: r.status for k, r in store.state(runs[-1], runs).items()}
    assert state == {(r["patient"], r["trial"]): r["status"] for r in without}


def test_a_resource_deleted_and_written_again_in_the_same_export_stays(as_of, catalog, tmp_path):
    res = _as(resources(next(iter(demo_bundles(as_of).values()))), "back")
    cond = next(r for r in res if r["resourceType"] == "Condition")
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", res))
    changes = export_folder(tmp_path / "changes", [cond], [f"Condition/{cond['id']}"])
    reread = from_mirror(mirror, changes, set(), None, catalog, as_of, None)
    assert reread.rows == _rows(catalog, {"back": res}, [], as_of)


def test_ids_shared_across_types_delete_only_the_type_named(as_of, catalog, tmp_path):
    pat = {"resourceType": "Patient", "id": "x1", "birthDate": "1980-01-01", "gender": "female"}
    obs = {"resourceType": "Observation", "id": "x1", "status": "final", "subject": {"reference": "Patient/x1"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}}  # fmt: skip
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", [pat, obs]))
    from_mirror(mirror, export_folder(tmp_path / "changes", [], ["Observation/x1?_cascade=delete"]), set(), None,
                catalog, as_of, None)  # fmt: skip
    assert [r["resourceType"] for r in dict(mirror.records({"x1"}))["x1"]] == ["Patient"]


def test_a_delete_of_another_servers_resource_is_not_applied():
    # FAILS: mirror.deletions matches any absolute URL ending Type/id, whichever server it names
    assert deletions(delete_bundle("http://attacker.example/fhir/Condition/c-1")) == []


@respx.mock
def test_a_malformed_deleted_entry_is_passed_over_as_a_malformed_output_entry_is(tmp_path):
    # FAILS: export._download sends a non-object `deleted` item to _checked(None): the whole export fails
    manifest = {"transactionTime": "2026-11-23T10:00:00Z", "requiresAccessToken": True,
                "output": ["junk", {"type": "Patient", "url": f"{BASE}/Binary/1"}],
                "deleted": ["junk", {"type": "Bundle", "url": f"{BASE}/Binary/2"}]}  # fmt: skip
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": STATUS})
    respx.get(STATUS).respond(200, json=manifest)
    respx.delete(STATUS).respond(202)
    respx.get(f"{BASE}/Binary/1").respond(200, content=b'{"resourceType":"Patient","id":"p1"}\n')
    respx.get(f"{BASE}/Binary/2").respond(200, content=delete_bundle("Condition/c-1") + b"\n")
    files = asyncio.run(BulkExport(BASE, "tok", since="2026-11-01T00:00:00Z").run(tmp_path))
    kept = {f.parent.name == DELETED: f for f in files}
    assert len(files) == 2 and deletions(kept[True].read_bytes()) == [("Condition", "c-1")]


@pytest.mark.parametrize("workers", [1, 2])
def test_per_patient_caps_hold_across_the_routers_partition_files(catalog, as_of, tmp_path, monkeypatch, workers):
    """A record over the resource cap whose lines are spread over many spans (so over several routers'
    files of its partition, some routed late by recheck_across): left out as one router leaves it out; the
    same record without its disease is screened outside; the gzip non-entry file brings Conditions last."""
    res = resources(demo_bundles(as_of)["demo-amara"])
    inside, outside = _as(res, "big-in"), _as(res, "big-out", conditions=False)
    small = _as(resources(demo_bundles(as_of)["demo-eli"]), "small")
    rest = [orjson.dumps(r) for r in inside + outside + small if r["resourceType"] != "Condition"]
    conds = [orjson.dumps(r) for r in inside + small if r["resourceType"] == "Condition"]
    files = {"Patient.ndjson": b"\n".join(rest[::2]) + b"\n", "Observation.ndjson": b"\n".join(rest[1::2]) + b"\n",
             "zz.ndjson.gz": b"\n".join(conds) + b"\n"}  # fmt: skip
    folder = _export(tmp_path, files)
    limits = ReadLimits(max_patient_resources=50)
    reference = _one_router(catalog, folder, limits)
    _spanned(monkeypatch, 300)
    got = screen(folder, DIRS, as_of, workers=workers, limits=limits, catalog=catalog)
    assert got.stats.too_large == {"big-in"} and _counts(got.stats) == _counts(reference)
    want = [r for r in _whole(catalog, rest + conds, as_of) if r["patient"] != "big-in"]
    assert _diff(got.rows, want) == []
