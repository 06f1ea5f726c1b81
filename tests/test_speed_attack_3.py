"""Attacks on the third round of speed changes, kept as regression tests (each compares against a rule or a
reference, never against a trial id):

1. route.Router.block / is_entry_file: files named for Patient or Condition parsed whole (never counted
   outside the cohort), the others through `_filtered`, whose settled blocks count their outside lines once.
2. prefilter.lines_naming / CohortFilter.inside_lines: the lines of inside patients found by one regular
   expression (ids with regex metacharacters, ids prefixes of one another, a patient named in another's note,
   the thresholds FEW / FEW+1 and "exactly half the named ids").
3. rows.Rows.segments / output._run_text: outside patients' rows written as text, across the 10,000-patient
   chunks of a run, with ids csv.writer quotes or a spreadsheet would run; an overlap with spooled rows.
4. api.middleware.AccessLog: an unexpected 500 still gets its one access-log line, with the route template.
5. fhir.read.model: strict validation with the R4B models imported only when it first validates.
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_prefilter_attack import _as, _diff, _export, _whole

from cds_service.screening import rows as spool
from cds_service.screening.bulk import COUNTS, ReadLimits, ReadStats, _parsed, export_files, patients_in
from cds_service.screening.funnel import ROW_FIELDS
from cds_service.screening.output import _patients_csv
from cds_service.screening.prefilter import FEW, CohortFilter, lines_naming
from cds_service.screening.route import (
    ENTRY_TYPES,
    PartFiles,
    Router,
    entry_files,
    is_entry_file,
    partition,
    route,
)
from cds_service.screening.run import opens_an_entry, screen
from cds_service.screening.spans import Span
from cds_service.settings import REPO_ROOT
from demo.load import demo_bundles, resources

DIRS = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXNORM, "code": "121191"}]}}

# ids a regular expression would misread unescaped, ids that are prefixes of one another, non-ASCII, spaces
HOSTILE_IDS = ["a", "a.", "a.b", "a.bc", "a+", "a*", "a|b", "b", "(x)", "[y]", "^s$", "q?", "x{2}", "x", "xx",
               "p 1", "p", "é", "Patient", "c-d", "1", "11", "$", "."]  # fmt: skip


# --- reference: which lines of a block name one of `ids` (written without the implementation's regexes) ----


def _ids_named(line: bytes) -> list[tuple[bytes, bytes]]:
    """(id, the byte after it) for each `Patient/` of a line: the id runs to the next / " \\ or newline."""
    out, at = [], line.find(b"Patient/")
    while at >= 0:
        start = end = at + len(b"Patient/")
        while end < len(line) and line[end : end + 1] not in (b"/", b'"', b"\\", b"\n"):
            end += 1
        out.append((line[start:end], line[end : end + 1]))
        at = line.find(b"Patient/", at + 1)
    return out


def _naive_spans(buf: bytes, ids: set[bytes]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for line in buf.splitlines(keepends=True):
        if any(i in ids and after in (b"/", b'"') for i, after in _ids_named(line)):
            spans.append((start, start + len(line)))
        start += len(line)
    return spans


def _obs_line(n: int, pid: str, style: int, note: str | None) -> bytes:
    refs = ["Patient/{}", "https://h.example/fhir/Patient/{}", "Patient/{}/_history/3", "Patient/Patient/{}"]
    r: dict = {"resourceType": "Observation", "id": f"o{n}", "status": "final", "code": {"text": "x"},
               "subject": {"reference": refs[style % len(refs)].format(pid)}}  # fmt: skip
    if note is not None:
        r["note"] = [{"text": note}]
    return json.dumps(r, ensure_ascii=False).encode() + b"\n"


_ID = st.sampled_from(HOSTILE_IDS)


@st.composite
def _blocks(draw):
    owners = draw(st.lists(_ID, min_size=1, max_size=25))
    lines = []
    for n, pid in enumerate(owners):
        other = draw(_ID)
        note = draw(st.sampled_from([None, f"see Patient/{other}", f"Patient/{other}/x", "Patient/", "no one"]))
        lines.append(_obs_line(n, pid, draw(st.integers(0, 3)), note))
    inside = draw(st.sets(_ID, max_size=8))
    return b"".join(lines), {i.encode() for i in inside}


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_blocks())
def test_lines_naming_finds_exactly_the_lines_naming_one_of_the_ids(block):
    """One regular expression for all the ids: metacharacters escaped, a prefix id never taking a longer one's
    line, the last `Patient/` of `Patient/Patient/x`, a note naming another, the empty id of a bare
    `Patient/"`; each line once, in order."""
    buf, ids = block
    assert lines_naming(buf, ids) == _naive_spans(buf, ids)
    assert lines_naming(buf, ids | {b""}) == _naive_spans(buf, ids | {b""})


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_blocks())
def test_a_settled_block_is_its_line_count_and_its_inside_lines_are_the_naive_ones(block):
    buf, inside = block
    cohort = CohortFilter(lambda res, pid: False, inside)
    assert CohortFilter.settled(buf) == buf.count(b"\n")
    spans = cohort.inside_lines(buf)
    assert spans is None or spans == _naive_spans(buf, inside)
    assert CohortFilter.settled(buf + b"\n") == 0  # a blank line: not settled (the line-by-line path)


# --- the router over one block: which lines are routed, and the counts ----------------------------------------


def _route_block(tmp: Path, name: str, buf: bytes, inside: set[bytes]) -> tuple[list[bytes], ReadStats]:
    """Route one block of `name` with `inside` known inside; the lines written to the partitions (bodies)."""
    work = tmp / f"work-{zlib.crc32(buf + name.encode())}-{len(inside)}"
    work.mkdir()
    files, stats = PartFiles(work, 3, "t"), ReadStats()
    router = Router(files, stats, CohortFilter(lambda res, pid: False, inside))
    router.block(Path(name), 0, buf)
    router.recheck()
    files.close()
    routed = [line.partition(b"\t")[2] for p in sorted(work.iterdir()) for line in p.read_bytes().splitlines()]
    return routed, stats


def _interleaved(inside: list[str], outside: list[str], per: int, notes: bool) -> bytes:
    lines = []
    for k in range(per):
        for i, pid in enumerate(inside + outside):
            note = None
            if notes and (i + k) % 2 == 0:  # the other side named in a note, or another of the same side
                side = inside if pid in inside else outside
                pool = [p for p in side if p != pid] if (i + k) % 4 else (outside if pid in inside else inside)
                note = f"see Patient/{pool[(i + k) % len(pool)]}" if pool else None
            lines.append(_obs_line(len(lines), pid, i + k, note))
    return b"".join(lines)


@pytest.mark.parametrize(
    ("n_in", "n_out", "notes"),
    [
        (FEW, FEW, False),  # FEW inside, exactly half the named ids: found by the one scan
        (FEW + 1, FEW + 1, False),  # one past FEW: each line looked at
        (FEW, FEW - 1, False),  # one past half: each line looked at
        (1, 1, False),  # exactly half
        (3, 3, True),  # notes name the other side: more named ids, lines naming two inside patients
        (FEW, FEW + 5, True),
        (0, 5, False),
        (5, 0, False),
    ],
)
def test_a_settled_block_routes_exactly_the_lines_of_inside_patients_and_counts_the_rest_once(
    tmp_path, n_in, n_out, notes
):
    """Whatever path the block takes (thresholds of inside_lines), the lines written to the partitions are
    those naming an inside patient, each once; every line counted once, the others as outside."""
    pool = [f"{i}{s}" for s in ("", ".", "+", "|a", "(x)") for i in HOSTILE_IDS]  # prefixes of one another
    pool = list(dict.fromkeys(pool))
    rng = random.Random(n_in * 1000 + n_out)
    rng.shuffle(pool)
    inside, outside = pool[:n_in], pool[n_in : n_in + n_out]
    buf = _interleaved(inside, outside, 3, notes)
    keys = {p.encode() for p in inside}
    want = [buf[a:b].rstrip(b"\n") for a, b in _naive_spans(buf, keys)]
    routed, stats = _route_block(tmp_path, "Observation.000.ndjson", buf, keys)
    assert sorted(routed) == sorted(want)
    assert stats.lines == buf.count(b"\n")
    assert stats.outside_cohort == buf.count(b"\n") - len(want)


@pytest.mark.parametrize("n_in", [0, 2, FEW + 1])
@pytest.mark.parametrize("where", ["head", "middle", "tail", "all"])
@pytest.mark.parametrize("small", [False, True])
def test_lines_judged_before_a_later_condition_are_read_again_wherever_they_sit_in_the_block(
    tmp_path, n_in, where, small
):
    """A patient outside when a settled block is read, brought inside by a Condition in a later file: their
    lines at the block's start, middle or end (after the last inside patient's line), or the whole block,
    are routed after all, and no longer counted outside. `small`: the line cap makes blocks of a few lines,
    read at offsets other than 0."""
    ids = list(dict.fromkeys(f"{i}{s}" for s in ("", "+", "(x)") for i in HOSTILE_IDS))
    inside, outside, late = ids[:n_in], ids[n_in + 1 : n_in + 6], ids[n_in]
    body = [_obs_line(k, pid, k, None) for k, pid in enumerate((inside + outside) * 2)]
    mine = [_obs_line(1000 + k, late, k, f"see Patient/{outside[0]}" if k % 2 else None) for k in range(3)]
    if where == "all":
        body = mine
    else:
        at = {"head": 0, "middle": len(body) // 2, "tail": len(body)}[where]
        body[at:at] = mine
    buf = b"".join(body)
    condition = {"resourceType": "Condition", "id": "c-late", "subject": {"reference": f"Patient/{late}"},
                 "code": {"text": "opens"}}  # fmt: skip
    obs, cond = tmp_path / "Observation.ndjson", tmp_path / "zz.ndjson"
    obs.write_bytes(buf)
    cond.write_bytes(orjson.dumps(condition) + b"\n")
    work = tmp_path / "work"
    work.mkdir()
    opens = CohortFilter(lambda res, pid: res.get("code", {}).get("text") == "opens", {p.encode() for p in inside})
    cap = 3 * max(map(len, body)) if small else 1 << 20
    done = route([Span(obs), Span(cond)], PartFiles(work, 3, "t"), cap, opens)
    routed = [line.partition(b"\t")[2] for p in sorted(work.iterdir()) for line in p.read_bytes().splitlines()]
    keys = {p.encode() for p in [*inside, late]}
    want = [buf[a:b].rstrip(b"\n") for a, b in _naive_spans(buf, keys)]
    assert sorted(routed) == sorted([*want, orjson.dumps(condition)])
    assert done.stats.lines == buf.count(b"\n") + 1
    assert done.stats.outside_cohort == buf.count(b"\n") - len(want)


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("Patient.ndjson", True),
        ("Condition.000.ndjson.gz", True),
        ("Patient.a.b.ndjson", True),
        ("Condition.ndjson.gz", True),
        ("Observation.ndjson", False),
        ("PatientExtra.ndjson", False),
        ("patient.ndjson", False),
        ("ConditionPatient.ndjson", False),
        ("zz.ndjson", False),
    ],
)
def test_an_entry_file_is_parsed_whole_and_any_other_filtered(tmp_path, name, entry):
    """Observations of patients outside misfiled in a Patient or Condition file are parsed (never counted
    outside); in any other file the same lines are left unparsed. Every line counted once either way."""
    buf = _interleaved(["a.b", "x"], ["a", "a.bc", "xx", "(x)"], 4, notes=True)
    routed, stats = _route_block(tmp_path, name, buf, {b"a.b", b"x"})
    assert is_entry_file(Path(name)) is entry
    assert stats.lines == buf.count(b"\n")
    inside_lines = [buf[a:b].rstrip(b"\n") for a, b in _naive_spans(buf, {b"a.b", b"x"})]
    if entry:
        assert stats.outside_cohort == 0 and stats.resources == stats.lines
        assert sorted(routed) == sorted(buf.splitlines())  # each parsed and written with its owner
    else:
        assert sorted(routed) == sorted(inside_lines)
        assert stats.outside_cohort == buf.count(b"\n") - len(inside_lines)


def test_entry_files_are_the_ones_is_entry_file_names(tmp_path):
    """The files read first (entry_files) are exactly those parsed whole (is_entry_file); names the export
    does not read are neither."""
    names = ["Patient.ndjson", "Patient.000.ndjson.gz", "Condition.1.2.ndjson", "1.Patient.ndjson",
             "Patient-1.ndjson", "Patient.ndjson.bak", "Condition.json", "Observation.ndjson", "patient.ndjson",
             "PatientX.ndjson", "Conditions.ndjson"]  # fmt: skip
    folder = tmp_path / "export"
    folder.mkdir()
    for n in names:
        (folder / n).write_bytes(gzip.compress(b"") if n.endswith(".gz") else b"")
    entry, rest = entry_files(folder)
    assert entry == [p for _, p in export_files(folder) if is_entry_file(p)]
    assert {p.name for p in entry} == {"Patient.ndjson", "Patient.000.ndjson.gz", "Condition.1.2.ndjson"}
    assert not any(is_entry_file(p) for p in rest)
    assert not is_entry_file(Path("1.Patient.ndjson")) and "Patient" in ENTRY_TYPES


# --- the whole screen over a hostile export ------------------------------------------------------------


def _records_held(catalog, folder: Path, tmp: Path, limits: ReadLimits) -> tuple[dict[str, list[bytes]], ReadStats]:
    """What the workers hold of each patient inside after one router partitions the export with the filter."""
    cohort = CohortFilter(opens_an_entry(catalog, None))
    work = tmp / "parts"
    work.mkdir()
    parts, stats = partition(folder, work, 3, limits, cohort)
    inside = {k.decode() for k in cohort.added_at}
    held: dict[str, list[bytes]] = {}
    for part in parts:
        counted = ReadStats()
        for pid, res in patients_in(part, limits, counted.too_large, inside, counted):
            held[pid] = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in res)
        stats.absorb(counted)
    return held, stats


def _whole_records(lines: list[bytes]) -> dict[str, list[bytes]]:
    records: dict[str, list[dict]] = {}
    shared: list[dict] = []
    for line in lines:
        kind, pid, res = _parsed(line)
        if kind == "medication":
            shared.append(res)
        elif kind in ("patient", "record"):
            records.setdefault(pid, []).append(res)
    return {
        pid: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in res + shared)
        for pid, res in records.items()
        if any(r["resourceType"] == "Patient" for r in res)
    }


def _check_counts(stats: ReadStats, lines: list[bytes]) -> None:
    """Every non-blank line counted once: as a parsed kind, or as outside the cohort."""
    assert stats.lines == sum(1 for x in lines if x.strip())
    assert stats.lines == stats.resources + stats.malformed + stats.other_types + stats.outside_cohort


def _hostile_export(as_of) -> tuple[dict[str, bytes], list[bytes], set[str]]:
    """60 patients inside (an SLE record) and 60 outside (the same without its Conditions), ids built on
    regex metacharacters and prefixes of one another; their lines spread over entry files and others, with
    Observations misfiled in the Patient and Condition files, one patient's Condition misfiled last (after
    their lines were judged), notes naming other patients, a Medication shared."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    small, rich = demo["demo-eli"], demo["demo-chen"]
    ids = list(dict.fromkeys(f"{i}{s}" for s in ("", ".", "+", "|a", "(x)") for i in HOSTILE_IDS))[:120]
    inside, outside = ids[0::2], ids[1::2]
    late = inside[7]  # their Condition comes last, in a file of no entry type
    records = {pid: _as(rich if n % 20 == 0 else small, pid, conditions=pid in inside) for n, pid in enumerate(ids)}
    files: dict[str, list[bytes]] = {
        "Patient.000.ndjson.gz": [], "Condition.ndjson": [], "Observation.a.ndjson": [],
        "Observation.b.ndjson.gz": [], "Observation.c.ndjson": [], "zz.ndjson": [],
    }  # fmt: skip
    few = set(inside[:FEW]) | set(outside[:FEW])
    for n, (pid, res) in enumerate(records.items()):
        for j, r in enumerate(res):
            t = r["resourceType"]
            if t == "Observation" and j % 6 == 0:
                r["note"] = [{"text": f"compare Patient/{ids[(n + j) % len(ids)]}"}]
            if t == "MedicationRequest" or (t == "MedicationStatement" and j % 2):
                r["medicationReference"] = {"reference": "Medication/m1"}
                r.pop("medicationCodeableConcept", None)
            line = json.dumps(r, ensure_ascii=False).encode()
            if t == "Patient":
                files["Patient.000.ndjson.gz"].append(json.dumps(r).encode())  # "\u00e9": escapes
            elif t == "Condition":
                files["zz.ndjson" if pid == late else "Condition.ndjson"].append(line)
            elif (n + j) % 7 == 0:
                files["Patient.000.ndjson.gz" if j % 2 else "Condition.ndjson"].append(line)  # misfiled
            elif j % 2 == 0:
                files["Observation.a.ndjson"].append(line)  # every patient: past FEW inside, settled
            elif pid in few:
                files["Observation.b.ndjson.gz"].append(line)  # FEW inside among as many outside
            else:
                files["Observation.c.ndjson"].append(line)
    files["Observation.a.ndjson"].sort(key=lambda x: zlib.crc32(x))  # every patient's lines mixed
    files["Observation.b.ndjson.gz"].sort(key=lambda x: zlib.crc32(x))
    files["Observation.c.ndjson"].sort(key=lambda x: zlib.crc32(x))
    files["zz.ndjson"].append(orjson.dumps(MEDICATION))
    every = [x for v in files.values() for x in v]
    return {k: b"\n".join(v) + b"\n" for k, v in files.items()}, every, set(inside)


def test_a_hostile_export_holds_and_screens_every_inside_record_whole(catalog, as_of, tmp_path):
    """The records the workers hold of the patients inside are their whole records, line for line; the rows
    are those of each whole record; every line counted once."""
    files, every, inside = _hostile_export(as_of)
    folder = _export(tmp_path, files)
    limits = ReadLimits()
    held, stats = _records_held(catalog, folder, tmp_path, limits)
    whole = _whole_records(every)
    assert set(held) == inside
    assert {p: held[p] for p in sorted(held)} == {p: whole[p] for p in sorted(inside)}
    _check_counts(stats, every)
    assert stats.outside_cohort > 0
    got = screen(folder, DIRS, as_of, catalog=catalog, workers=1)
    assert _diff(got.rows, _whole(catalog, every, as_of)) == []
    _check_counts(got.stats, every)
    assert [getattr(got.stats, f) for f in COUNTS] == [getattr(stats, f) for f in COUNTS]


def test_an_export_of_entry_files_only_counts_as_a_full_parse(catalog, as_of, tmp_path):
    """Every line of a file named for Patient or Condition is parsed (whatever it holds): the counts are those
    of a screen without the filter, and none is outside the cohort; the rows those of each whole record."""
    files, every, _ = _hostile_export(as_of)
    entry = {"Patient.000.ndjson.gz": b"", "Condition.1.ndjson": b""}
    for i, data in enumerate(files.values()):
        entry[list(entry)[i % 2]] += data
    folder = _export(tmp_path, entry)
    got = screen(folder, DIRS, as_of, catalog=catalog, workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        full = partition(folder, Path(tmp), 2, ReadLimits(), None)[1]
    assert got.stats.outside_cohort == 0
    assert [getattr(got.stats, f) for f in COUNTS] == [getattr(full, f) for f in COUNTS]
    _check_counts(got.stats, every)
    assert _diff(got.rows, _whole(catalog, every, as_of)) == []


# --- patients.csv: runs of outside patients written as text ----------------------------------------------


def _row_by_row(rows, raw: Path, safe: Path) -> None:
    _patients_csv(list(rows), raw, safe)  # a list: never segments, each row written by csv.writer


def test_a_run_past_the_chunk_size_with_hostile_ids_writes_what_csv_writer_writes(tmp_path):
    """25,000 outside patients (three 10,000-patient chunks) around evaluated ones: a chunk whose only id to
    quote holds a bare CR, one with a comma, one with a quote, the empty id and formula ids in the first;
    a template whose cells csv.writer quotes and a spreadsheet would run. Both CSVs byte for byte those of
    the same rows written one by one, and read back to the same ids."""
    ids = [f"p{i:06d}" for i in range(25_000)]
    ids[5_000] += ",x"
    ids[15_000] += "\rx"  # the second chunk's only quoted id
    ids[24_000] += '"q'
    ids += ["", "=1+1", "-2", "@x", "\ttab"]  # sort before "p": the first chunk
    ids.sort()
    full = dict.fromkeys(ROW_FIELDS, "")
    template = [
        {**full, "trial": "T1", "status": "ineligible", "failed": "cohort entry", "fail": 1},
        {**full, "trial": "T2", "status": "ineligible", "failed": "a,b", "unknowns": "=x", "fail": 1},
    ]
    kept = spool.Rows()
    evaluated = ["p000000a", "p012000\nq", "p019999z", "zzz"]
    kept.add([{**full, "patient": p, "trial": t, "status": "possibly", "pass": 2}
              for p in evaluated for t in ("T1", "T2")])  # fmt: skip
    kept.add_uniform(template, ids)
    raw, safe, raw1, safe1 = (tmp_path / n for n in ("raw.csv", "safe.csv", "raw1.csv", "safe1.csv"))
    _patients_csv(kept, raw, safe)
    _row_by_row(kept, raw1, safe1)
    assert raw.read_bytes() == raw1.read_bytes()
    assert safe.read_bytes() == safe1.read_bytes()
    with raw.open(newline="", encoding="utf-8") as f:
        got = [r[0] for r in list(csv.reader(f))[1:]]
    assert got == [p for p in sorted(ids + evaluated) for _ in range(2)]
    with safe.open(newline="", encoding="utf-8") as f:
        cells = [c for r in csv.reader(f) for c in r]
    assert "'=1+1" in cells and "'=x" in cells and "=1+1" not in cells and "=x" not in cells


def test_a_run_of_only_the_empty_id_and_of_only_quoted_ids(tmp_path):
    """The smallest runs: the empty id alone (csv.writer writes it bare before a comma), one id needing quotes
    alone, with one trial and with three."""
    full = dict.fromkeys(ROW_FIELDS, "")
    for ids in ([""], ['"'], ["\n"], ["", ","], ["=", ""], ["a"]):
        for trials in (["T"], ["A", "B", "C"]):
            kept = spool.Rows()
            kept.add_uniform([{**full, "trial": t, "status": "ineligible"} for t in trials], sorted(ids))
            _patients_csv(kept, tmp_path / "raw.csv", tmp_path / "safe.csv")
            _row_by_row(kept, tmp_path / "raw1.csv", tmp_path / "safe1.csv")
            for n in ("raw", "safe"):
                assert (tmp_path / f"{n}.csv").read_bytes() == (tmp_path / f"{n}1.csv").read_bytes(), (ids, trials)


def test_an_overlap_with_spooled_rows_at_the_last_patient_is_written_row_by_row(tmp_path, monkeypatch):
    """Rows.segments raising Overlap part-way (the evaluated rows spooled to disk, the overlapping patient the
    run's last): the files are rewritten whole, every row once."""
    monkeypatch.setattr(spool, "HELD", 3)
    full = dict.fromkeys(ROW_FIELDS, "")
    kept = spool.Rows()
    for p in ("p0", "p2", "p9"):
        kept.add([{**full, "patient": p, "trial": t, "status": "possibly"} for t in ("A", "B")])
    kept.add_uniform([{**full, "trial": t, "status": "ineligible"} for t in ("A", "B")], ["p1", "p3", "p9"])
    assert kept.spooled
    with pytest.raises(spool.Overlap):
        list(kept.segments())
    _patients_csv(kept, tmp_path / "raw.csv", tmp_path / "safe.csv")
    with (tmp_path / "raw.csv").open(newline="", encoding="utf-8") as f:
        got = [(r["patient"], r["trial"]) for r in csv.DictReader(f)]
    assert got == sorted((r["patient"], r["trial"]) for r in kept) and len(got) == len(kept) == 12


# --- the access log ------------------------------------------------------------------------------------


def test_an_unexpected_500_gets_its_access_log_line_with_the_route_template(tmp_path, caplog, monkeypatch):
    """An error escaping a route with a token in its path: the bare 500, and still one access-log line with the
    route template and status 500, the token nowhere in the log."""
    from test_hostile_input import make_client, service_log, written

    from cds_service.views import checklists

    secret = "S" * 40

    def boom(token: str) -> str:
        raise RuntimeError(f"token {token}")

    monkeypatch.setattr(checklists, "token_hash", boom)
    with make_client(tmp_path, log_level="INFO") as c, service_log(caplog):
        r = c.get(f"/checklist/{secret}")
        ok = c.get("/cds-services")
    assert r.status_code == 500 and r.json() == {"error": "internal error"} and ok.status_code == 200
    lines = [(x.method, x.path, x.status) for x in caplog.records if x.getMessage() == "request"]
    assert lines == [("GET", "/checklist/{token}", 500), ("GET", "/cds-services", 200)]
    assert secret not in written(caplog) and "Traceback" not in written(caplog)


# --- strict validation with the models imported lazily --------------------------------------------------

_REF = {"reference": "Patient/p1"}
_MED = {"coding": [{"system": RXNORM, "code": "121191"}]}
_HB = {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}
VALID = {
    "Patient": {"id": "p1", "gender": "female", "birthDate": "1980-01-01"},
    "Observation": {"id": "o1", "status": "final", "code": _HB,
                    "subject": _REF, "effectiveDateTime": "2026-11-01", "valueQuantity": {"value": 12, "unit": "g/dL"}},
    "Condition": {"id": "c1", "subject": _REF,
                  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}},
    "MedicationStatement": {"id": "ms1", "status": "active", "medicationCodeableConcept": _MED, "subject": _REF},
    "MedicationRequest": {"id": "mr1", "status": "active", "intent": "order", "medicationCodeableConcept": _MED,
                          "subject": _REF},
    "MedicationAdministration": {"id": "ma1", "status": "completed", "medicationCodeableConcept": _MED,
                                 "subject": _REF, "effectiveDateTime": "2026-11-01"},
    "MedicationDispense": {"id": "md1", "status": "completed", "medicationCodeableConcept": _MED, "subject": _REF},
    "Immunization": {"id": "i1", "status": "completed", "vaccineCode": {"text": "flu"}, "patient": _REF,
                     "occurrenceDateTime": "2026-10-01"},
    "Medication": {"id": "m1", "code": _MED},
    "Procedure": {"id": "pr1", "status": "completed", "subject": _REF, "code": {"text": "x"}},
    "AllergyIntolerance": {"id": "a1", "patient": _REF, "code": {"text": "penicillin"}},
}  # fmt: skip
SEEN_INVALID = ("Patient", "Observation", "Condition", "MedicationStatement", "MedicationRequest",
                "MedicationAdministration", "MedicationDispense", "Medication", "AllergyIntolerance")  # fmt: skip

_STRICT_PROBE = """
import json, sys
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.read import NORMALIZED_TYPES, model
from cds_service.settings import REPO_ROOT, get_settings
VALID, SEEN = json.loads(sys.argv[1]), json.loads(sys.argv[2])
loaded = lambda: sorted(m for m in sys.modules if m.startswith("fhir.resources.R4B."))
s = get_settings()
cat = Catalog.load(s.mappings_dir, s.trials_dir, s.strict_validation)
lax = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials")
res = [{"resourceType": t, **v} for t, v in VALID.items()]
out = {"strict": cat.normalizer.strict, "after_load": loaded(), "lax": lax.facts(res, "p1").skipped}
out["after_lax"] = loaded()
out["valid"] = cat.facts(res, "p1").skipped
out["invalid"] = {}
for t in SEEN:
    bad = [r if r["resourceType"] != t else {**r, "notAnElement": 1} for r in res]
    out["invalid"][t] = cat.facts(bad, "p1").skipped
out["models"] = {}
for t in sorted(NORMALIZED_TYPES):
    m = model(t)
    ok = [True, False]
    for i, r in enumerate(({"resourceType": t, **VALID[t]}, {"resourceType": t, **VALID[t], "notAnElement": 1})):
        try:
            m.model_validate(r)
        except Exception:
            ok[i] = not ok[i]
    out["models"][t] = (m.__name__, ok)
print(json.dumps(out))
"""


def test_strict_mode_from_the_environment_still_validates_with_models_imported_when_first_needed(tmp_path):
    """TRIAL_MATCHER_STRICT_VALIDATION in a fresh process: loading the catalogues and a lax read import no R4B
    model; strict reading refuses each resource type with an element R4 does not define (reported as
    skipped) and keeps the valid ones; every type's model is that type's and judges as R4 does."""
    env = {**os.environ, "TRIAL_MATCHER_STRICT_VALIDATION": "true", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRIAL_MATCHER_DATABASE_URL", None)
    env["TRIAL_MATCHER_DATABASE_URL"] = f"sqlite:///{tmp_path / 's.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-c", _STRICT_PROBE, json.dumps(VALID), json.dumps(SEEN_INVALID)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["strict"] is True
    assert out["after_load"] == [] and out["after_lax"] == [] and out["lax"] == []
    assert out["valid"] == []
    for t in SEEN_INVALID:
        assert out["invalid"][t] == [f"{t}/{VALID[t]['id']} failed FHIR R4 validation"], t
    assert out["models"] == {t: [t, [True, True]] for t in VALID}


def test_a_strict_catalogue_in_process_refuses_what_r4_refuses(as_of):
    """In this process too (models perhaps imported by other tests, perhaps not): the strict catalogue
    refuses an invalid Observation of a demo record and keeps the rest of it."""
    from cds_service.eligibility.catalog import Catalog

    strict = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials", strict=True)
    lax = Catalog.load(REPO_ROOT / "mappings", REPO_ROOT / "trials")
    res = copy.deepcopy(resources(demo_bundles(as_of)["demo-eli"]))
    assert strict.facts(res, "demo-eli").skipped == []
    obs = next(r for r in res if r["resourceType"] == "Observation")
    obs["notAnElement"] = {"value": 1}  # read as it is by the lax reader, refused by R4
    assert lax.facts(res, "demo-eli").skipped == []
    assert strict.facts(res, "demo-eli").skipped == [f"Observation/{obs['id']} failed FHIR R4 validation"]
