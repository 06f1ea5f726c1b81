"""Attacks on the screen's cohort filter (screening/prefilter.py, route.py, run.add_outside): exports built
to make the rows of `screen` differ from evaluating each patient's whole record, as `bulk._parsed` assigns
the lines (`catalog.report(catalog.facts(record + shared Medications, pid), as_of)`)."""

from __future__ import annotations

import copy
import gzip
import io
import json
import shutil
import zlib
from pathlib import Path

import pytest

from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.codes import SNOMED, UCUM
from cds_service.screening import bulk
from cds_service.screening import run as run_module
from cds_service.screening.bulk import BOM, ReadLimits, _parsed
from cds_service.screening.funnel import COHORT_STEP, row
from cds_service.screening.run import screen
from cds_service.screening.spark import tag
from cds_service.screening.workers import Workers
from cds_service.settings import REPO_ROOT
from demo import synthetic as syn
from demo.load import demo_bundles, resources

DIRS = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)


@pytest.fixture(autouse=True, params=["compiled", "regular expressions"])
def scan_path(request, monkeypatch):
    """Every attack twice: with the compiled scan (native/) and with the regular expressions it stands for."""
    from cds_service.screening import prefilter

    if request.param != "compiled":
        monkeypatch.setattr(prefilter, "_compiled_scan", None)
    else:
        assert prefilter._compiled_scan is not None  # noqa: SLF001 - bootstrap builds it; the test needs it
    return request.param


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXNORM, "code": "121191"}]}}


def _as(res: list[dict], pid: str, *, conditions: bool = True) -> list[dict]:
    """A demo record given to patient `pid` (every reference rewritten), without its Conditions if asked."""
    out = []
    for r in copy.deepcopy(res):
        if r["resourceType"] == "Condition" and not conditions:
            continue
        if r["resourceType"] == "Patient":
            r["id"] = pid
        else:
            r["id"] = f"{r.get('id')}-{len(pid)}-{zlib.crc32(pid.encode()) % 9973}"
            for field in ("subject", "patient"):
                if field in r:
                    r[field] = {"reference": f"Patient/{pid}"}
        out.append(r)
    return out


def _ordered(res: list[dict]) -> list[dict]:
    """Everything else before the Conditions: a patient comes inside only after their lines were judged."""
    return sorted(res, key=lambda r: r["resourceType"] == "Condition")


def _med_request(pid: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{zlib.crc32(pid.encode()) % 9973}",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-10-01",
    }


def _whole(catalog: Catalog, lines: list[bytes], as_of, trial_ids=None) -> list[dict]:
    """The rows of each whole record, the lines assigned to patients as the screen assigns them."""
    records: dict[str, list[dict]] = {}
    shared: list[dict] = []
    for line in dict.fromkeys(lines):
        kind, pid, res = _parsed(line)
        if kind == "medication":
            shared.append(res)
        elif kind in ("patient", "record"):
            records.setdefault(pid, []).append(res)
    rows = [
        row(pid, t)
        for pid, res in records.items()
        if any(r["resourceType"] == "Patient" for r in res)
        for t in catalog.report(catalog.facts(res + shared, pid), as_of, trial_ids).trials
    ]
    return sorted(rows, key=lambda r: (r["patient"], r["trial"]))


def _diff(rows, want: list[dict]) -> list:
    got = list(rows)
    g = {(r["patient"], r["trial"]): r for r in got}
    w = {(r["patient"], r["trial"]): r for r in want}
    assert len(g) == len(got), "a row is duplicated"
    return [(k, g.get(k), w.get(k)) for k in sorted(set(g) | set(w)) if g.get(k) != w.get(k)]


def _export(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return folder


# --- found by this attack and fixed -------------------------------------------------------------------


def test_a_deeply_nested_condition_code_does_not_stop_the_screen(catalog, as_of, tmp_path):
    """orjson reads nesting to depth 1024 but writes only to 254: the cohort test's cache key
    (`orjson.dumps(condition.get("code"))` in run.opens_an_entry) raises on a Condition whose code holds an
    extension nested 300 deep, and the whole screen fails; the record itself evaluates fine."""
    res = resources(demo_bundles(as_of)["demo-eli"])
    deep: list = []
    for _ in range(300):
        deep = [deep]
    for r in res:
        if r["resourceType"] == "Condition":
            r["code"]["extension"] = [{"url": "urn:x", "valueString": "x", "_nested": deep}]
    lines = [json.dumps(r).encode() for r in res]
    want = _whole(catalog, lines, as_of)
    assert any(r["failed"] != "cohort entry" for r in want)  # the record opens an entry
    folder = _export(tmp_path, {"x.ndjson": b"\n".join(lines) + b"\n"})
    got = screen(folder, DIRS, as_of, catalog=catalog)
    assert _diff(got.rows, want) == []


def _closed_group_code(catalog: Catalog) -> str:
    """A SNOMED CT code of a condition group the maps know that opens no trial's entry on its own."""
    live = catalog.live()
    for group in catalog.mappings.conditions.groups.values():
        for code in group.snomed:
            reduced = {"resourceType": "Condition", "code": {"coding": [{"system": SNOMED, "code": code}]}}
            facts = catalog.facts([reduced], "x")
            if facts.conditions and not catalog.opens_some_entry(facts, live):
                return code
    raise AssertionError("every condition group opens some entry")


def test_an_unreadable_condition_that_opens_no_entry_leaves_the_entry_as_the_whole_record_does(
    catalog, as_of, tmp_path
):
    """Found by a screen fuzzer: a Condition the reader cannot read leaves its patient's entry unknown (the
    source cannot say "no lupus on record"), and the hook says not assessed; the cohort filter judged the
    Condition by its code alone, which opens no entry, and the screen said ineligible. An STU3-style
    verificationStatus on hypertension (read before the code), and an onset no calendar has on a condition
    the maps know (read after it); beside them the same Conditions read cleanly."""
    res = resources(demo_bundles(as_of)["demo-eli"])
    known = _closed_group_code(catalog)
    cases = {
        "stu3-status": ({"coding": [{"system": SNOMED, "code": "38341003"}]}, {"verificationStatus": "confirmed"}),
        "bad-onset": ({"coding": [{"system": SNOMED, "code": known}]}, {"onsetDateTime": "2020-13-45"}),
        "clean-status": ({"coding": [{"system": SNOMED, "code": "38341003"}]}, {}),
        "clean-onset": ({"coding": [{"system": SNOMED, "code": known}]}, {"onsetDateTime": "2020-12-15"}),
    }
    records = []
    for pid, (code, extra) in cases.items():
        condition = {"resourceType": "Condition", "id": f"{pid}-c", "subject": {"reference": f"Patient/{pid}"},
                     "clinicalStatus": {"coding": [{"code": "active"}]}, "code": code, **extra}  # fmt: skip
        records += [*_as(res, pid, conditions=False), condition]
    lines = [json.dumps(r).encode() for r in records]
    want = _whole(catalog, lines, as_of)
    status = {r["patient"]: r["status"] for r in want}
    assert status["stu3-status"] == status["bad-onset"] == "not-assessed"  # the teeth: unread, so unknown
    folder = _export(tmp_path, {"x.ndjson": b"\n".join(lines) + b"\n"})
    for workers in (1, 2):
        assert _diff(screen(folder, DIRS, as_of, workers=workers, catalog=catalog).rows, want) == [], workers


def test_two_medications_with_one_id_are_read_in_the_exports_order_whoever_routes_them(
    catalog, as_of, tmp_path, monkeypatch
):
    """Found by a screen fuzzer: the shared Medications were written in the order the routers finished, and
    of two with one id the later is read, so two workers could screen a record unlike one. Here the routers'
    results come back in reverse: the rows are still those of the export read in order."""
    pid = "dup"
    record = [
        syn.patient(pid),
        syn.condition(pid, snomed="55464009", display="Systemic lupus erythematosus", onset="2021-06-02"),
        {"resourceType": "MedicationStatement", "id": "ms-dup", "status": "active",
         "subject": {"reference": f"Patient/{pid}"},
         "medicationReference": {"reference": "Medication/m1"}, "effectivePeriod": {"start": "2026-01-01"},
         "dosage": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                     "doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "system": UCUM, "code": "mg"}}]}]},
    ]  # fmt: skip
    drugs = [
        json.dumps({"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXNORM, "code": c}]}})
        for c in ("8640", "5521")
    ]  # fmt: skip  (prednisone, then hydroxychloroquine: one id)
    filler = [json.dumps({"resourceType": "Medication", "id": f"f{i}"}) for i in range(3000)]
    files = {
        "Medication.000.ndjson": "\n".join([*filler, drugs[0]]).encode() + b"\n",
        "Medication.001.ndjson": drugs[1].encode() + b"\n",
        "x.ndjson": b"\n".join(json.dumps(r).encode() for r in record) + b"\n",
    }
    lines = [line for data in files.values() for line in data.splitlines()]
    want = _whole(catalog, lines, as_of)
    swapped = [*lines[: len(filler)], lines[len(filler) + 1], lines[len(filler)], *lines[len(filler) + 2 :]]
    assert _diff(want, _whole(catalog, swapped, as_of))  # the teeth: which of the two is read matters
    folder = _export(tmp_path, files)

    def last_job_first(self, fn, jobs):  # the routers' results in the reverse of the export's order
        futures = [self.submit(fn, job) for job in jobs]
        return [f.result() for f in reversed(futures)]

    monkeypatch.setattr(Workers, "unordered", last_job_first)
    monkeypatch.setattr(run_module, "until_ready", lambda spans, ready, take: spans)  # the workers route all
    assert _diff(screen(folder, DIRS, as_of, workers=2, catalog=catalog).rows, want) == []


def test_a_byte_order_mark_starting_a_line_is_read_as_nothing(catalog, as_of, tmp_path):
    """Found by a screen fuzzer: a file written by a Windows tool starts with a byte order mark, which orjson
    refuses, so the file's first resource was set aside as malformed (here the Patient of a lupus patient,
    whose rows were lost). Files joined put the mark at the start of a later line; inside a string it is a
    character of the record and stays one. The Spark engine tags the lines alike."""
    res = resources(demo_bundles(as_of)["demo-eli"])
    res[0]["name"] = [{"text": "Zero\ufeffwidth"}]  # the mark as a character inside a value
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in _ordered(res)]
    want = _whole(catalog, lines, as_of)
    assert want and _parsed(BOM + lines[0])[0] == "malformed"  # the teeth: as the mark was read before
    half = len(lines) // 2
    files = {
        "Patient.ndjson": BOM + lines[0] + b"\n",
        "x.ndjson": b"\n".join([BOM + lines[1], *lines[2:half], BOM + lines[half], *lines[half + 1 :]]) + b"\n",
        "y.ndjson.gz": BOM + b"\n",  # a mark alone: a blank line
    }
    folder = _export(tmp_path, files)
    got = screen(folder, DIRS, as_of, catalog=catalog)
    assert _diff(got.rows, want) == [] and got.stats.malformed == 0
    assert [tag(BOM.decode() + line.decode())[:2] for line in lines] == [tag(line.decode())[:2] for line in lines]
    read = bulk.lines(io.BytesIO(files["Patient.ndjson"]), 1 << 20, bulk.ReadStats())  # the worklist's reader
    assert [bulk.classify(line)[0] for line in read] == ["patient"]


def test_a_strict_catalogue_screens_each_record_as_it_evaluates_it(as_of, tmp_path):
    """With a strict catalogue, the parent decides who is inside strictly (run.opens_an_entry), but the
    workers that evaluate the patients inside load a lax one (run.screen's `init`, run._init): an Observation
    strict validation refuses still counts for them, unlike `catalog.report(catalog.facts(...))`."""
    strict = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials", strict=True)
    res = resources(demo_bundles(as_of)["demo-eli"])
    for r in res:
        if r["resourceType"] == "Observation":
            r["notAnElement"] = 1
    lines = [json.dumps(r).encode() for r in res]
    folder = _export(tmp_path, {"x.ndjson": b"\n".join(lines) + b"\n"})
    got = screen(folder, DIRS, as_of, catalog=strict)
    assert _diff(got.rows, _whole(strict, lines, as_of)) == []


def test_the_per_patient_cap_counts_what_is_held(catalog, as_of, tmp_path):
    """The caps bound what a worker holds (bulk.py). The same oversized record is left out, and said, when
    it has the disease; without it only its Patient and Conditions are held, so it is screened, outside
    the cohort, as its whole record would be."""
    res = resources(demo_bundles(as_of)["demo-amara"])
    inside, outside = _as(res, "big-in"), _as(res, "big-out", conditions=False)
    lines = [json.dumps(r).encode() for r in inside + outside]
    folder = _export(tmp_path, {"x.ndjson": b"\n".join(lines) + b"\n"})
    got = screen(folder, DIRS, as_of, catalog=catalog, limits=ReadLimits(max_patient_resources=50))
    assert got.stats.too_large == {"big-in"}
    assert "big-in" not in {r["patient"] for r in got.rows}
    out_rows = [r for r in got.rows if r["patient"] == "big-out"]
    assert out_rows == [r for r in _whole(catalog, lines, as_of) if r["patient"] == "big-out"] and out_rows


# --- attacks that held (regression guards) ------------------------------------------------------------


ODD_IDS = ['q"x', "r\\y", "p é", "p", "p-1", "Patient", "s\u2028t", "n.1"]


@pytest.mark.parametrize("gz", [False, True])
def test_a_hostile_mixed_export_screens_as_each_whole_record(catalog, as_of, tmp_path, gz):
    """Odd ids (quotes, backslashes, non-ASCII, one id the prefix of another, the id `Patient`), references
    absolute, versioned, repeated and escaped, every Condition after the lines it must bring back, CRLF,
    blank and repeated lines, a line over the 1 MiB block, a Patient line missing, the last line without
    its newline, a shared Medication written with escapes, a subset of the trials: the rows are those of
    each whole record."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    names = sorted(demo)
    records: dict[str, list[dict]] = {}
    for i, pid in enumerate(ODD_IDS):
        src = demo[names[i % len(names)]]
        records[pid] = _as(src, pid, conditions=i % 3 != 2)  # every third: no disease, outside
        records[pid].append(_med_request(pid))
    refs = ["Patient/{}", "https://h/fhir/Patient/{}", "Patient/{}/_history/2", "Patient/Patient/{}"]
    for i, (pid, res) in enumerate(records.items()):
        for j, r in enumerate(res):
            if "subject" in r:
                r["subject"] = {"reference": refs[(i + j) % len(refs)].format(pid)}
            if r["resourceType"] == "Observation" and j % 7 == 0:
                r["performer"] = [{"reference": f"Patient/{pid}"}]  # the same patient: still theirs
            if r["resourceType"] == "Observation" and j % 11 == 0:
                r["note"] = [{"text": f"see Patient/{ODD_IDS[(i + 1) % len(ODD_IDS)]} and Patient/"}]
    records["p-1"][0]["note"] = [{"text": "x" * (3 << 19)}]  # one line of 1.5 MiB
    first, second = [], []
    for i, res in enumerate(records.values()):
        for j, r in enumerate(_ordered(res)):
            if r["resourceType"] == "Patient" and i == 5:
                continue  # a patient without their Patient line: no row, whatever their Conditions
            text = json.dumps(r, ensure_ascii=(i + j) % 4 == 0, separators=[(",", ":"), (", ", " : ")][j % 2])
            if (i + j) % 9 == 0:
                text = text.replace("/", "\\/")
            (second if r["resourceType"] == "Condition" else first).append(text.encode())
    med = b'{ "resourceType" :\t"Medication", "id":"m1", "code":{"coding":[{"system":"http:\\/\\/www.nlm.nih.gov\\/'
    med += b'research\\/umls\\/rxnorm","code":"121191"}]}}'
    first += first[::13]  # repeated lines
    lines = first + second + [med]
    trial_ids = sorted(catalog.trials)[1:]
    mixed = b"\r\n".join(first[: len(first) // 2]) + b"\r\n\r\n\n"
    rest = b"\n".join(first[len(first) // 2 :]) + b"\n\n"
    later = b"\n".join([*second, med])  # no final newline
    sfx = ".gz" if gz else ""
    folder = _export(tmp_path, {f"Observation.a.ndjson{sfx}": mixed, "zz.ndjson": rest, f"zzz.ndjson{sfx}": later})
    got = screen(folder, DIRS, as_of, trial_ids, catalog=catalog)
    want = _whole(catalog, lines, as_of, trial_ids)
    assert _diff(got.rows, want) == []
    patients = {r["patient"] for r in want}
    assert len(patients) == len(ODD_IDS) - 1 and got.stats.outside_cohort > 0
    with_med = [r for r in want if r["patient"] == "p-1"]
    without = _whole(catalog, [x for x in lines if x is not med], as_of, trial_ids)
    assert with_med != [r for r in without if r["patient"] == "p-1"]  # losing the Medication would show


def test_a_draft_trial_among_the_chosen_or_alone(catalog, as_of, tmp_path):
    """A draft trial is not a cohort the filter opens (run.opens_an_entry): chosen alone, every patient is
    outside and gets the template; chosen with others, the template and the workers must still agree
    with each whole record on the draft's row."""
    trials = tmp_path / "trials"
    shutil.copytree(REPO_ROOT / "trials", trials)
    draft, other = sorted(catalog.trials)[:2]
    path = next(p for p in trials.glob("*.yaml") if f"id: {draft}\n" in p.read_text())
    path.write_text(path.read_text() + "\ndraft: true\n")
    drafted = Catalog.load(REPO_ROOT / "mappings", trials)
    assert drafted.trials[draft].draft
    res = resources(demo_bundles(as_of)["demo-eli"])
    lines = [json.dumps(r).encode() for r in _ordered(res + _as(res, "no-sle", conditions=False))]
    folder = _export(tmp_path, {"x.ndjson": b"\n".join(lines) + b"\n"})
    for ids in (None, [draft], [draft, other]):
        got = screen(folder, (REPO_ROOT / "mappings", trials, 365), as_of, ids, catalog=drafted)
        assert _diff(got.rows, _whole(drafted, lines, as_of, ids)) == [], ids
        assert got.stats.outside_cohort > 0


def test_settled_blocks_keep_every_line_of_a_patient_inside(catalog, as_of, tmp_path):
    """Conditions and Patients read first, then Observations in blocks the filter settles at once
    (prefilter.CohortFilter.inside_lines): ids that are prefixes of one another inside and outside, another
    patient named in a note, blocks cut small by the line cap, a file gzipped: nothing of theirs is lost."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    src = demo[max(demo, key=lambda p: len(demo[p]))]
    ids = {"p": True, "p-1": False, "p-10": True, "q": False, "1": True, "11": False}
    records = {pid: _as(src, pid, conditions=inside) for pid, inside in ids.items()}
    by_type: dict[str, list[bytes]] = {"Condition": [], "Patient": [], "Observation": [], "MedicationStatement": []}
    for i, res in enumerate(records.values()):
        for j, r in enumerate(res):
            if r["resourceType"] == "Observation" and j % 5 == 0:
                r["note"] = [{"text": f"compare Patient/{list(ids)[(i + 1) % len(ids)]}"}]
            by_type.setdefault(r["resourceType"], []).append(json.dumps(r).encode())
    obs = by_type["Observation"]
    obs[:] = [x for pair in zip(obs[::2], obs[1::2], strict=False) for x in pair[::-1]]  # interleaved
    lines = [x for v in by_type.values() for x in v]
    files = {f"{t}.ndjson{'.gz' if t == 'Observation' else ''}": b"\n".join(v) + b"\n" for t, v in by_type.items()}
    folder = _export(tmp_path, files)
    cap = max(len(x) for x in lines) + 1
    got = screen(folder, DIRS, as_of, catalog=catalog, limits=ReadLimits(max_line_bytes=cap))
    assert _diff(got.rows, _whole(catalog, lines, as_of)) == []
    assert got.stats.outside_cohort > 0


def test_blocks_of_types_no_criterion_reads_are_counted_and_misfiled_records_among_them_read(catalog, as_of, tmp_path):
    """A real export's bulk is resources no criterion reads (Claims, Encounters): blocks of them are counted as
    other types without being parsed, whoever's they are. A Condition that brings a patient inside and an
    Observation, misfiled among them, are read; the rows are those of each whole record."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    names = sorted(demo)
    records = {f"r{i}": _as(demo[names[i % len(names)]], f"r{i}", conditions=i == 0) for i in range(6)}
    claims = [
        json.dumps({"resourceType": "Claim" if k % 3 else "Encounter", "id": f"c-{pid}-{k}",
                    "patient": {"reference": f"Patient/{pid}"}, "text": {"div": "x" * 2000}}).encode()
        for pid in records for k in range(300)
    ]  # fmt: skip
    sle = next(r for r in _as(demo[names[1]], "r1") if r["resourceType"] == "Condition")  # r1 is outside else
    obs = next(r for r in records["r0"] if r["resourceType"] == "Observation")
    misfiled = [json.dumps(sle).encode(), json.dumps({**obs, "id": "misfiled"}).encode()]
    claims[len(claims) // 2 : len(claims) // 2] = misfiled
    read = [json.dumps(r).encode() for res in records.values() for r in res]
    files = {"Claim.ndjson": b"\n".join(claims) + b"\n", "Observation.ndjson": b"\n".join(read) + b"\n"}
    folder = _export(tmp_path, files)
    got = screen(folder, DIRS, as_of, catalog=catalog)
    assert _diff(got.rows, _whole(catalog, read + claims, as_of)) == []
    assert got.stats.lines == len(read) + len(claims)
    # most of them never parsed (4 patients of 6 are outside: routed one by one, theirs would count outside)
    assert got.stats.other_types > 2 * len(claims) // 3
    assert any(r["patient"] == "r1" and r["failed"] != COHORT_STEP for r in got.rows)  # the misfiled Condition
