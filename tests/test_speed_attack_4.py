"""Attacks on this round's screen changes, kept as regression tests:

1. prefilter.unread_only (route.Router.block): a block of a file not named for Patients or Conditions in which
   no `"resourceType": "<a type read>"` appears is counted as lines of other types without being parsed. Can a
   line that parses to a read type hide in such a block (spacing, escapes, a key written twice, the type split
   across a read or a span, gzip, CRLF, no final newline)? Is every line counted once, as parsing counts it?
2. normalize._procedure's memo of procedure groups, and read.iter_resources yielding list items directly.
3. bulk.patients_in parsing a partition line's head only when it is a JSON string.

The truth is always what parsing each line gives (bulk._parsed), and the rows those of each whole record
(tests/test_prefilter_attack._whole)."""

from __future__ import annotations

import copy
import json
import random
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_prefilter_attack import MEDICATION, _as, _diff, _export, _med_request, _whole
from test_speed_attack_3 import _whole_records

from cds_service.screening import spans as spans_module
from cds_service.screening.bulk import READ_TYPES, ReadLimits, ReadStats, _parsed, patients_in
from cds_service.screening.funnel import COHORT_STEP
from cds_service.screening.prefilter import unread_only
from cds_service.screening.route import PartFiles, Router, partition
from cds_service.screening.run import screen
from cds_service.settings import REPO_ROOT
from demo.load import demo_bundles, resources

DIRS = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)
READ_KINDS = ("medication", "no_patient", "two_patients", "patient", "record")
MIB = 1 << 20


# --- 1. unread_only: nothing read hides in a block counted unread --------------------------------------------

_TYPES = sorted(READ_TYPES) + ["Claim", "Encounter", "ExplanationOfBenefit", "Observations", "observation",
                               "Bundle", "ObservationDefinition", "Medicatio", "Provenance"]  # fmt: skip
# JSON whitespace, and bytes that are not JSON whitespace but look like it (orjson refuses them: malformed)
_WS = st.sampled_from(["", " ", "\t", "\r", "  \t\r ", "\x0c", "\x0b", "\xa0", "\u2028", "\x00"])


def _escaped(text: str, how: int) -> str:
    """`text` as the inside of a JSON string: plain, a letter as \\u, an uppercase \\u, or every letter as \\u."""
    if how == 0 or len(text) < 2:
        return text
    if how == 1:
        return text[:1] + f"\\u{ord(text[1]):04x}" + text[2:]
    if how == 2:
        return text[:-1] + f"\\u{ord(text[-1]):04X}"
    return "".join(f"\\u{ord(c):04x}" for c in text)


@st.composite
def _member_rt(draw) -> str:
    key = _escaped("resourceType", draw(st.sampled_from([0, 0, 0, 1, 3])))
    value = _escaped(draw(st.sampled_from(_TYPES)), draw(st.sampled_from([0, 0, 0, 1, 2])))
    tail = draw(st.sampled_from(["", "", " ", "\\/", "\t"]))  # a space, an escaped `/` or a raw tab in the value
    return f'"{key}"{draw(_WS)}:{draw(_WS)}"{value}{tail}"'


_FILLER = st.sampled_from([
    '"id":"x"', '"subject":{"reference":"Patient/p"}', '"subject":{"reference":"Patient\\/p"}',
    '"note":[{"text":"\\"resourceType\\":\\"Observation\\""}]', '"text":"caf\u00e9"', '"n":[1,2.5e3,null,true]',
    '"extension":[{"url":"x","valueString":"resourceType Observation"}]',
])  # fmt: skip


@st.composite
def _resource(draw, depth: int = 0) -> str:
    members = draw(st.lists(st.one_of(_member_rt(), _FILLER), min_size=0, max_size=4))
    if depth < 1 and draw(st.booleans()):
        members.append('"contained":[' + draw(_resource(depth + 1)) + "]")
    draw(st.randoms()).shuffle(members)
    seps = [draw(st.sampled_from([",", " , ", ",\t"])) for _ in members]
    body = "".join((s if i else "") + m for i, (s, m) in enumerate(zip(seps, members, strict=True)))
    return "{" + draw(_WS) + body + draw(_WS) + "}"


_LINE = st.one_of(
    _resource(),
    st.tuples(st.sampled_from(["", " ", "\t", "\r", "\ufeff", "\x00"]), _resource(), _WS).map("".join),
    st.sampled_from(["", " ", "\r", " \t\r", "{not json", '["a list"]', '"a string"', "null", "{}"]),
)


def _kinds(lines: list[bytes]) -> list[str]:
    return [_parsed(line)[0] for line in lines]


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_LINE, min_size=1, max_size=6), st.sampled_from([b"\n", b"\r\n"]))
def test_no_line_of_a_type_read_is_ever_in_a_block_counted_unread(lines, eol):
    """Keys and types escaped (\\u, upper and lower hex), every JSON whitespace and lookalikes that are not
    (form feed, vertical tab, NBSP, U+2028, NUL), a BOM or NUL before the object, a key written twice in any
    order, contained resources, values with a trailing space, tab or escaped slash, CRLF: when the block is
    counted unread, every line parses to another type or is malformed, and each non-blank one is counted."""
    raw = [line.encode() for line in lines]
    buf = b"".join(line + eol for line in raw)
    kinds = _kinds([line + eol for line in raw])
    n = unread_only(buf)
    if any(k in READ_KINDS for k in kinds):
        assert n == 0, (buf, kinds)
    if n:
        assert all(k in ("other_types", "malformed", "blank") for k in kinds)
        assert n == sum(k != "blank" for k in kinds), (buf, kinds)


_SEEDS = [
    b'{"resourceType":"Observation","subject":{"reference":"Patient/p"}}',
    b'{"id":"m","resourceType" :\t"Medication"}',
    b'{"resourceType":"Claim","subject":{"reference":"Patient/p"},"resourceType":"Condition"}',
    b'{"resourceType":"Patient","id":"p"}',
    b'{"subject":{"reference":"Patient/p"},"resourceType"\r:"MedicationRequest"}',
]


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 2), st.binary(min_size=0, max_size=3)), max_size=4),
)
def test_byte_edits_of_a_read_line_never_make_a_read_line_the_block_test_misses(seed, edits):
    """Random insertions, deletions and replacements of bytes in lines of read types (any byte: escapes,
    whitespace and lookalikes, invalid UTF-8, a UTF-16 BOM): whatever still parses to a read type keeps the
    block read."""
    line = bytearray(seed)
    for at, op, data in edits:
        at = at % (len(line) + 1)
        if op == 0:
            line[at:at] = data
        elif op == 1:
            del line[at : at + len(data) + 1]
        else:
            line[at : at + len(data)] = data
    line = bytes(line).replace(b"\n", b" ")
    buf = b'{"resourceType":"Claim"}\n' + line + b"\n"
    if _parsed(line)[0] in READ_KINDS:
        assert unread_only(buf) == 0, line


def test_every_type_read_under_every_spelling_keeps_its_block_read():
    """Each read type, with each JSON whitespace around the colon, as the key written last after a Claim's,
    inside a contained resource, in a CRLF line: parsed it is read, so the block is."""
    spellings = ['"resourceType":"{t}"', '"resourceType" \t\r:\r\t "{t}"',
                 '"resourceType":"Claim","resourceType":"{t}"',
                 '"resourceType":"Claim","contained":[{{"resourceType":"{t}"}}]']  # fmt: skip
    for t in sorted(READ_TYPES):
        for s in spellings:
            line = ("{" + s.format(t=t) + ',"id":"1","subject":{"reference":"Patient/p"}}').encode()
            block = b'{"resourceType":"Claim"}\r\n' + line + b"\r\n"
            assert unread_only(block) == 0, line


def _route_all(name: str, buf: bytes, tmp: Path) -> ReadStats:
    work = tmp / f"w-{zlib.crc32(buf + name.encode())}"
    work.mkdir()
    stats = ReadStats()
    router = Router(PartFiles(work, 2, "t"), stats, None)
    router.block(Path(name), 0, buf)
    router.files.close()
    return stats


# --- found by this attack ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [b"\x0c", b"\x0b", b" \x0c\t", b"\r\x0b"])
@pytest.mark.parametrize("first", [True, False])
def test_a_form_feed_or_vertical_tab_line_is_not_counted_whichever_block_it_is_in(tmp_path, blank, first):
    """Found by this attack, fixed: `bulk._parsed` calls a line blank when `bytes.strip()` leaves nothing, and
    that strips form feed and vertical tab too; a blank line is not counted. The blank-line patterns of
    `prefilter.unread_only` knew only space, tab and CR, so a block of Claims holding a line of `\\x0c` was
    counted unread with that line as one more line of another type (3 lines where parsing counts 2)."""
    claim = b'{"resourceType":"Claim","id":"c"}'
    buf = b"\n".join([blank, claim, claim] if first else [claim, blank, claim]) + b"\n"
    assert [_parsed(x)[0] for x in buf.split(b"\n")[:-1]].count("blank") == 1
    parsed = _route_all("Patient.ndjson", buf, tmp_path)  # an entry file: parsed line by line
    assert (parsed.lines, parsed.other_types) == (2, 2)
    got = _route_all("Claim.ndjson", buf, tmp_path)
    assert (got.lines, got.other_types) == (parsed.lines, parsed.other_types)


# --- an export built to hide read lines among unread ones ----------------------------------------------------


def _styled(res: dict, style: int) -> bytes:
    """A resource written so the block test has to see it: its type first, last (tab and CR around the colon),
    after a Claim's type written first (the last key wins), \\u-escaped in the key or the type, every `/`
    escaped, non-ASCII raw."""
    rt = res["resourceType"]
    rest = {k: v for k, v in res.items() if k != "resourceType"}
    inner = json.dumps(rest, separators=(",", ":"), ensure_ascii=style != 4)[1:-1]
    sep = "," if inner else ""
    if style == 0:
        text = f'{{"resourceType":"{rt}"{sep}{inner}}}'
    elif style == 1:
        text = f'{{{inner}{sep}"resourceType"\t:\r "{rt}"}}'
    elif style == 2:
        text = f'{{"resourceType":"Claim",{inner}{sep}"resourceType" :"{rt}"}}'
    elif style == 3:
        text = f'{{"resourceType":"{rt[0]}\\u{ord(rt[1]):04x}{rt[2:]}"{sep}{inner}}}'
    elif style == 4:
        text = f'{{"resourceType"\r\r:\t\t"{rt}"{sep}{inner.replace("/", chr(92) + "/")}}}'
    else:
        text = f'{{"resourc\\u0065Type":"{rt}"{sep}{inner}}}'
    line = text.encode()
    assert _parsed(line)[2] == orjson.loads(json.dumps(res)), (style, line)
    return line


def _claim(pid: str, k: int) -> bytes:
    """Lines of types no criterion reads, of every spelling, and a few malformed ones: parsed, set aside."""
    text = "x" * (300 + (k * 37) % 500)
    forms = [
        f'{{"resourceType":"Claim","id":"c{k}","patient":{{"reference":"Patient/{pid}"}},"text":"{text}"}}',
        f'{{"id":"e{k}","resourceType" : "ExplanationOfBenefit","patient":{{"reference":"Patient\\/{pid}"}}}}',
        f'{{"resourceType":"Encounter","subject":{{"reference":"Patient/{pid}"}},"contained":[{{"resourceType":"Claim"}}]}}',
        f'{{"resourceType":"Observations","subject":{{"reference":"Patient/{pid}"}},"t":"{text}"}}',
        f'{{"resourceType":"observation","subject":{{"reference":"Patient/{pid}"}}}}',
        f'{{"resourceType":"Observation ","subject":{{"reference":"Patient/{pid}"}}}}',
        f'{{"resourceType":"Observation\\/","subject":{{"reference":"Patient/{pid}"}}}}',
        f'{{"resourceType":"DocumentReference","note":"\\"resourceType\\":\\"Condition\\"","t":"{text}"}}',
        f'{{"resourceType":"Observation\t","subject":{{"reference":"Patient/{pid}"}}}}',  # raw tab: malformed
        '{"resourceType":"Claim"',  # cut: malformed
    ]  # fmt: skip
    return forms[k % len(forms)].encode()


def _filler(n: int) -> bytes:
    head, tail = b'{"resourceType":"Claim","id":"f","text":"', b'"}'
    return head + b"y" * (n - len(head) - len(tail)) + tail


def _hiding_export(as_of) -> tuple[dict[str, bytes], list[bytes]]:
    """Patients and some Conditions in entry files; every other read line of four records, the Conditions of a
    patient who is inside only through them, one Patient line and the shared Medication, all in a 3.5 MiB
    Claim file among Claims, written in every `_styled` spelling, some CRLF, some straddling the 1 MiB reads
    (`"resourceType"` itself cut), a whitespace first line, the last line without its newline."""
    demo = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    records = {
        "in1": _as(demo["demo-eli"], "in1"),
        "in2": _as(demo["demo-chen"], "in2"),
        "out1": _as(demo["demo-bruno"], "out1", conditions=False),
        "late": _as(demo["demo-dana"], "late"),  # its Conditions only in the Claim file
    }
    for pid in records:
        records[pid].append(_med_request(pid))
    patients = [json.dumps(r).encode() for res in records.values() for r in res if r["resourceType"] == "Patient"]
    late_patient = patients.pop()  # late's Patient line among the Claims
    conditions = [
        json.dumps(r).encode()
        for pid, res in records.items()
        if pid != "late"
        for r in res
        if r["resourceType"] == "Condition"
    ]
    hidden = [
        _styled(r, i % 6)
        for i, r in enumerate(
            r for pid, res in records.items() for r in res
            if r["resourceType"] != "Patient" and (r["resourceType"] != "Condition" or pid == "late")
        )
    ]  # fmt: skip
    hidden.insert(len(hidden) // 2, _styled(MEDICATION, 3))
    hidden.insert(len(hidden) // 3, _styled(orjson.loads(late_patient), 1))
    rng = random.Random(4)
    rng.shuffle(hidden)
    body, lines = bytearray(b" \r\n"), [b" \r"]  # a blank first line: the block holding it is parsed

    def add(line: bytes, eol: bytes = b"\n") -> None:
        body.extend(line + eol)
        lines.append(line + eol[:-1])

    k, boundary = 0, MIB
    while len(body) < 4 * MIB + MIB // 4:
        to_go = boundary - len(body)
        if 200 < to_go < 1200:  # the next line straddles the read: a read line with its type key cut in two
            line = hidden.pop() if boundary != 2 * MIB else _claim("in1", 0)  # (a Claim at 2 MiB: see below)
            at = line.find(b'"resourceType"')
            add(_filler(to_go - at - 5 - 1))
            add(line)
            boundary += MIB
            continue
        # no read line from 1.5 to 3 MiB: the 1 MiB read from 2 MiB is a block of Claims only, counted unread
        if k % 40 == 39 and not 3 * MIB // 2 < len(body) < 3 * MIB:
            add(hidden.pop(), b"\r\n" if k % 80 == 79 else b"\n")
        add(_claim(["in1", "in2", "out1", "late", "nobody"][k % 5], k), b"\r\n" if k % 7 == 0 else b"\n")
        k += 1
    for line in hidden:
        add(line)
    last = _styled({"resourceType": "Immunization", **{k: v for k, v in records["in2"][-1].items()
                                                         if k != "resourceType"}}, 1)  # fmt: skip
    body.extend(last)  # no final newline
    lines.append(last)
    files = {
        "Patient.ndjson": b"\n".join(patients) + b"\n",
        "Condition.ndjson": b"\n".join(conditions) + b"\n",
        "Claim.ndjson": bytes(body),
    }
    return files, lines + patients + conditions


def _expected(lines: list[bytes]) -> dict[str, int]:
    kinds = _kinds(lines)
    return {
        "lines": sum(k != "blank" for k in kinds),
        "read": sum(k in READ_KINDS for k in kinds),
        "aside": sum(k in ("other_types", "malformed") for k in kinds),
        "malformed": kinds.count("malformed"),
    }


def test_the_hiding_export_really_hides_and_straddles(as_of):
    """The export is what it says: read lines in every spelling among Claims, some across the 1 MiB reads
    with the type key cut, pure blocks of Claims with malformed lines (what unread_only counts unread)."""
    files, lines = _hiding_export(as_of)
    body = files["Claim.ndjson"]
    kinds = _kinds(lines)
    assert sum(k in READ_KINDS for k in kinds) > 500 and kinds.count("malformed") > 100
    for b in (MIB, 2 * MIB, 3 * MIB, 4 * MIB):
        start = body.rfind(b"\n", 0, b) + 1
        line = body[start : body.find(b"\n", b)]
        read = _parsed(line)[0] in READ_KINDS
        assert read == (b != 2 * MIB) and start < b < start + line.find(b'"resourceType"') + 14, b
    block = body[body.find(b"\n", 2 * MIB) + 1 : body.rfind(b"\n", 0, 3 * MIB) + 1]
    assert unread_only(block) > 1000 and b"{not" not in block and b'"Claim"\n' in block


SMALL = 16 * 1024  # a line cap that makes blocks of 16 KiB (bulk.blocks): most hold one read line or none


@pytest.mark.parametrize("cap", [None, SMALL])
@pytest.mark.parametrize("gz", [False, True])
def test_partition_without_the_filter_holds_every_whole_record_and_counts_each_line_once(as_of, tmp_path, gz, cap):
    """route.partition without a cohort filter, in 1 MiB blocks and in 16 KiB ones (a block with a single
    read line of one spelling): every patient's held record is their whole record, every non-blank line
    counted once, the read ones as resources, and only malformed lines may move to other types (some do: the
    unread blocks were taken)."""
    files, lines = _hiding_export(as_of)
    if gz:
        files["Claim.ndjson.gz"] = files.pop("Claim.ndjson")
    folder = _export(tmp_path, files)
    work = tmp_path / "parts"
    work.mkdir()
    limits = ReadLimits(max_line_bytes=cap) if cap else ReadLimits()
    parts, stats = partition(folder, work, 3, limits, None)
    held: dict[str, list[bytes]] = {}
    for part in parts:
        counted = ReadStats()
        for pid, res in patients_in(part, ReadLimits(), counted.too_large, None, counted):
            held[pid] = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in res)
        stats.absorb(counted)
    assert held == _whole_records(lines)
    want = _expected(lines)
    assert stats.lines == want["lines"] == stats.resources + stats.malformed + stats.other_types
    assert stats.resources == want["read"] and stats.malformed + stats.other_types == want["aside"]
    assert stats.malformed < want["malformed"]  # blocks were counted unread


@pytest.mark.parametrize(
    ("gz", "workers", "span", "cap"),
    [
        (False, 1, None, None),
        (True, 1, None, SMALL),
        (False, 2, 1, None),
        (False, 2, 1, SMALL),
        (False, 1, None, SMALL),
    ],  # fmt: skip
)
def test_a_screen_of_the_hiding_export_gives_each_whole_records_rows(catalog, as_of, tmp_path, monkeypatch, gz,
                                                                     workers, span, cap):  # fmt: skip
    """run.screen (always with the cohort filter), one worker and two, the Claim file gzipped or cut into
    spans at arbitrary offsets (spans.SPAN_BYTES made small), in 1 MiB blocks or 16 KiB ones: the rows are
    each whole record's, `late` is
    inside through its Conditions hidden among Claims, and every non-blank line is counted once."""
    if span is not None:
        monkeypatch.setattr(spans_module, "SPAN_BYTES", span)
    files, lines = _hiding_export(as_of)
    if gz:
        files["Claim.ndjson.gz"] = files.pop("Claim.ndjson")
    folder = _export(tmp_path, files)
    limits = ReadLimits(max_line_bytes=cap) if cap else ReadLimits()
    got = screen(folder, DIRS, as_of, workers=workers, catalog=catalog, limits=limits)
    want_rows = _whole(catalog, lines, as_of)
    assert _diff(got.rows, want_rows) == []
    assert {r["patient"] for r in want_rows} == {"in1", "in2", "out1", "late"}
    assert any(r["patient"] == "late" and r["failed"] != COHORT_STEP for r in got.rows)
    s = got.stats
    assert s.lines == _expected(lines)["lines"]
    assert s.lines == s.resources + s.malformed + s.other_types + s.outside_cohort
    assert s.other_types > 1000


def test_the_hidden_medication_matters(catalog, as_of):
    """So the screen tests above would see it lost: the shared Medication, hidden \\u-escaped among Claims,
    changes some patient's rows."""
    _, lines = _hiding_export(as_of)
    med = _styled(MEDICATION, 3)
    assert med in lines
    assert _whole(catalog, lines, as_of) != _whole(catalog, [x for x in lines if x != med], as_of)


# --- 2. the normaliser's memo of procedure groups; iter_resources --------------------------------------------


SNOMED = "http://snomed.info/sct"


def _proc(i: int, code: Any, status: str = "completed") -> dict:
    return {"resourceType": "Procedure", "id": f"pr{i}", "status": status, "subject": {"reference": "Patient/p1"},
            "code": code, "performedDateTime": "2026-01-01"}  # fmt: skip


def test_procedures_sharing_a_code_under_another_system_or_display_are_grouped_each_alone(catalog):
    """The memo's key: the same code under SNOMED and another system, the same codes in another order, the
    same code with a display that names a group, a procedure not done first (returns before the memo), one
    whose code is not a string (Invalid, set aside) first: each is grouped as it is alone."""
    ap = {"system": SNOMED, "code": "127788007"}
    codes = [
        {"coding": [{"system": "http://loinc.org", "code": "127788007"}]},
        {"coding": [ap]},
        {"coding": [{"system": "http://loinc.org", "code": "1"}, ap]},
        {"coding": [ap, {"system": "http://loinc.org", "code": "1"}]},
        {"coding": [{**ap, "display": "Therapeutic plasma exchange"}]},
        {"coding": [{"code": "127788007"}]},
        {"coding": [{"system": SNOMED, "code": 127788007}]},
        {"coding": [ap], "text": "kidney transplant"},
    ]
    procs = [_proc(0, codes[1], "not-done")] + [_proc(i + 1, c) for i, c in enumerate(codes)]
    for order in (procs, procs[::-1]):
        f = catalog.facts(copy.deepcopy(order), "p1")
        alone = {p.resource: p.groups for r in order for p in catalog.facts([copy.deepcopy(r)], "p1").procedures}
        assert {p.resource: p.groups for p in f.procedures} == alone
    groups = {p.resource: p.groups for p in catalog.facts(procs, "p1").procedures}
    assert groups["Procedure/pr2"] and not groups.get("Procedure/pr1")  # SNOMED only
    assert groups["Procedure/pr5"] != groups["Procedure/pr2"]  # the display's words count


def test_the_procedure_memo_is_one_records_only(catalog):
    """The groups kept across records (now by the maps, Mappings._memoised) are kept by code and text: the same
    normaliser reads the same code in two patients' records, one with a word in the text, in either order."""
    ap = {"system": SNOMED, "code": "127788007"}
    plain, worded = _proc(1, {"coding": [ap]}), _proc(2, {"coding": [ap], "text": "plasma exchange"})
    a = catalog.facts([plain], "p1").procedures[0].groups
    b = catalog.facts([worded], "p1").procedures[0].groups
    assert a != b
    assert catalog.facts([plain], "p1").procedures[0].groups == a


def _old_iter(data: Any):
    """iter_resources before this round (every item through a generator of its own)."""
    if isinstance(data, list):
        for item in data:
            yield from _old_iter(item)
    elif isinstance(data, dict):
        if data.get("resourceType") == "Bundle":
            entries = data.get("entry")
            for entry in entries if isinstance(entries, list) else []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    yield from _old_iter(res)
        elif "resourceType" in data:
            yield data


_LEAF = st.one_of(
    st.sampled_from([None, 0, "x", True]),
    st.fixed_dictionaries({"resourceType": st.sampled_from([None, "Observation", "Patient", 5, "", "bundle"])}),
    st.just({"id": "no type"}),
)
_DATA = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.builds(
            lambda es: {"resourceType": "Bundle", "entry": es},
            st.lists(st.one_of(st.builds(lambda r: {"resource": r}, inner), inner), max_size=3),
        ),  # fmt: skip
    ),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(_DATA)
def test_iter_resources_yields_what_it_yielded_before(data):
    """Lists of resources, of Bundles, of lists; items typed None, a number, an empty or lowercase `bundle`,
    untyped, not dicts: the same objects in the same order as the generator-per-item version."""
    from cds_service.fhir.read import iter_resources

    got, want = list(iter_resources(data)), list(_old_iter(data))
    assert [id(x) for x in got] == [id(x) for x in want]


# --- 3. patients_in: a head parsed only when it is an owner's id ----------------------------------------------


def test_patients_in_with_only_gives_exactly_the_chosen_patients_records(tmp_path):
    """A partition of owner lines (ids `true`, `null`, with a quote, a tab, a backslash, non-ASCII, empty),
    lines routed unparsed (`true`, of patients chosen and not, some set aside), shared Medications (`null`):
    with `only`, each chosen patient's record is what it is without `only`, no other patient is given, and the
    resources of the unparsed lines are counted the same."""
    pids = ["true", "null", 'q"x', "a\tb", "r\\y", "é", "", "p", "p2"]
    only = {"true", 'q"x', "é", "", "p"}
    out = []
    for i, pid in enumerate(pids):
        pat = {"resourceType": "Patient", "id": pid}
        obs = {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": f"Patient/{pid}"}}
        out.append(orjson.dumps(pid) + b"\t" + orjson.dumps(pat))
        out.append(orjson.dumps(pid) + b"\t" + orjson.dumps(obs))
        unread = {**obs, "id": f"u{i}"}
        out.append(b"true\t" + orjson.dumps(unread))
        out.append(b'true\t{"resourceType":"Claim"}')
        out.append(b"null\t" + orjson.dumps({**MEDICATION, "id": f"m{i}"}))
    part = tmp_path / "part-0000.t.ndjson"
    part.write_bytes(b"\n".join(out) + b"\n")

    def read(chosen):
        stats = ReadStats()
        got = {pid: [r["id"] for r in res] for pid, res in patients_in(part, ReadLimits(), set(), chosen, stats)}
        return got, stats

    every, all_stats = read(None)
    chosen, chosen_stats = read(only)
    assert {"true", "null", 'q"x', "a\tb", "r\\y", "é", "p", "p2"} <= set(every)
    assert chosen == {pid: res for pid, res in every.items() if pid in only}
    assert {"true", 'q"x', "é", "p"} <= set(chosen)
    for p in ("true", "p"):  # its Patient, its Observation, the line routed unparsed (then the Medications)
        assert [x for x in chosen[p] if not x.startswith("m")] == [p, f"o{pids.index(p)}", f"u{pids.index(p)}"]
    assert (chosen_stats.resources, chosen_stats.other_types) == (all_stats.resources, all_stats.other_types)


def test_a_screen_counts_a_form_feed_line_as_it_counts_it_in_a_patient_file(tmp_path, as_of, catalog):
    """The same, through run.screen: a `\\x0c` line is passed over uncounted in Patient.ndjson and in
    Claim.ndjson alike: 3 lines (the Patient, two Claims), not 4."""
    claim = b'{"resourceType":"Claim","patient":{"reference":"Patient/p"}}'
    folder = _export(tmp_path, {"Patient.ndjson": b'{"resourceType":"Patient","id":"p"}\n\x0c\n',
                                "Claim.ndjson": claim + b"\n\x0c\n" + claim + b"\n"})  # fmt: skip
    s = screen(folder, DIRS, as_of, catalog=catalog).stats
    assert s.lines == 3 == s.resources + s.malformed + s.other_types + s.outside_cohort
