"""The screen's byte-level cohort filter (screening/prefilter.py) may only ever leave a line unparsed when
parsing it would have given it to a patient outside every cohort. These lines try to make the bytes say
otherwise than the JSON: escapes, absolute and versioned references, spacing, contained resources."""

from __future__ import annotations

import orjson
import pytest

from cds_service.screening.bulk import classify
from cds_service.screening.prefilter import CohortFilter, named_ids, unsettled

INSIDE = "in-1"
OUTSIDE = "out-1"


def _filter() -> CohortFilter:
    f = CohortFilter(lambda res, pid: pid == INSIDE)
    f.note({"resourceType": "Condition"}, INSIDE)
    return f


LINES = [
    # (raw line, whose record it is after parsing)
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/in-1"}}', INSIDE),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/out-1"}}', OUTSIDE),
    (b'{"resourceType" : "Observation", "subject": {"reference": "https://h/fhir/Patient/in-1/_history/2"}}', INSIDE),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient\\/in-1"}}', INSIDE),  # escaped slash
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/in\\u002d1"}}', INSIDE),  # escaped id
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/\\u0069n-1"}}', INSIDE),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/in-1\\"x"}}', 'in-1"x'),  # another id
    (b'{"resourc\\u0065Type":"Condition","subject":{"reference":"Patient/out-1"}}', OUTSIDE),  # entry: parsed
    (b'{"resourceType":"Patient","id":"in-1"}', INSIDE),
    (b'{"id":"in-1","resourceType":\n"Patient"}', INSIDE),
    (b'{"resourceType":"Observation","subject":{"type":"Patient","identifier":{"value":"in-1"}}}', None),
    (b'{"resourceType":"Medication","id":"m1","code":{"text":"rituximab"}}', None),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/out-1"},"note":[{"text":"Patient/in-1"}]}',
     OUTSIDE),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/Patient/in-1"}}', INSIDE),
    (b'{"resourceType":"Observation","subject":{"reference":"Patient/out-1"},"performer":[{"reference":'
     b'"Patient/in-1"}]}', None),  # two patients: set aside, counted
    (b'not json Patient/out-1', None),
]  # fmt: skip


@pytest.mark.parametrize(("line", "whose"), LINES)
def test_a_line_is_left_unparsed_only_when_it_is_no_cohort_patients(line, whose):
    f = _filter()
    kind, pid = classify(line)
    assert pid == whose, kind
    if pid == INSIDE or kind in ("patient", "medication", "no_patient") or unsettled(line):
        assert not f.outside(line)  # read: theirs, shared, counted, or needed for the entry
    if f.outside(line):
        assert pid != INSIDE and not unsettled(line)


def test_the_ordinary_lines_of_a_patient_outside_are_skipped():
    f = _filter()
    for pid in (OUTSIDE, "p.2", "A-9"):
        line = orjson.dumps({"resourceType": "Observation", "subject": {"reference": f"Patient/{pid}"}})
        assert f.outside(line) and named_ids(line) == {pid.encode()}
    assert not f.outside(b'{"resourceType":"Condition","subject":{"reference":"Patient/out-1"}}')


def test_a_patient_comes_inside_only_by_a_condition_that_opens_an_entry():
    f = CohortFilter(lambda res, pid: res.get("code") == "sle")
    f.note({"resourceType": "Observation", "code": "sle"}, "a")
    f.note({"resourceType": "Condition", "code": "htn"}, "a")
    assert f.added_at == {}
    f.note({"resourceType": "Condition", "code": "sle"}, "a")
    assert set(f.added_at) == {b"a"}


@pytest.mark.parametrize("seed", range(20))
def test_spans_cut_anywhere_hold_each_line_once(seed, tmp_path):
    """A file cut into spans at any byte (inside a line, on its newline, inside a line over the cap) gives
    each line to exactly one span, the one it starts in, at its offset, with the cap's counts unchanged."""
    import io
    import random

    from cds_service.screening.bulk import ReadStats, lines
    from cds_service.screening.spans import Span, span_blocks

    rng = random.Random(seed)
    data = b"".join(
        b"x" * rng.choice([0, 1, 5, 40, 200, 900]) + rng.choice([b"\n", b"\r\n", b"\n"]) for _ in range(200)
    ) + b"y" * rng.choice([0, 3, 300])
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(data)
    cap = rng.choice([10, 50, 300, 5000])
    cuts = sorted({0, *rng.sample(range(1, len(data)), k=rng.choice([1, 3, 17, 60]))})
    want_stats, got_stats = ReadStats(), ReadStats()
    want = [line.rstrip(b"\n") for line in lines(io.BytesIO(data), cap, want_stats)]
    got = []
    for a, b in zip(cuts, [*cuts[1:], None], strict=True):
        for offset, block in span_blocks(Span(path, a, b), cap, got_stats):
            assert data[offset : offset + len(block)] in (block, block[:-1])
            got += block.split(b"\n")[:-1]
    assert got == want and got_stats.too_long == want_stats.too_long


@pytest.mark.parametrize("seed", range(20))
def test_blocks_hold_the_lines_the_line_reader_gives_at_their_offsets(seed):
    """`blocks` (read in big pieces, for the cohort filter) keeps `lines`' cap and counts, and each block
    sits at its offset in the stream (the filter reads judged blocks again from there)."""
    import io
    import random

    from cds_service.screening.bulk import ReadStats, blocks, lines

    rng = random.Random(seed)
    data = b"".join(
        b"x" * rng.choice([0, 1, 5, 40, 200, 900]) + rng.choice([b"\n", b"\r\n", b"\n"]) for _ in range(200)
    ) + b"y" * rng.choice([0, 3, 300])  # maybe a last line without its newline
    cap, size = rng.choice([10, 50, 300, 5000]), rng.choice([7, 64, 1000, 1 << 20])
    want_stats, got_stats = ReadStats(), ReadStats()
    want = [line.rstrip(b"\n") for line in lines(io.BytesIO(data), cap, want_stats)]
    got = []
    for offset, block in blocks(io.BytesIO(data), cap, got_stats, size=size):
        assert block.endswith(b"\n") and data[offset : offset + len(block)] in (block, block[:-1])
        got += block.split(b"\n")[:-1]
    assert got == want and got_stats.too_long == want_stats.too_long


def test_the_cached_entry_test_answers_as_each_whole_condition(catalog):
    """`opens_an_entry` settles a Condition by its code alone when that opens nothing; every status,
    category and date a Condition may carry must leave the answer that of the whole Condition."""
    import itertools

    from cds_service.eligibility.cohort import entry
    from cds_service.screening.run import opens_an_entry

    codes = [
        {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M32.14"}], "text": "Lupus nephritis"},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
        {"text": "Systemic lupus erythematosus"},
        {"text": "Seasonal allergies"},
        {"coding": [{"system": "urn:local", "code": "42"}]},
        None,
    ]
    statuses = [None, "active", "resolved", "inactive"]
    verifications = [None, "confirmed", "refuted", "entered-in-error", "provisional"]
    categories = [None, "problem-list-item", "health-concern"]
    abatements = [None, "2020-01-01", "not a date"]
    opens = opens_an_entry(catalog, None)
    live = [t for t in catalog.trials.values() if not t.draft]
    seen = set()
    for code, cs, vs, cat, ab in itertools.product(codes, statuses, verifications, categories, abatements):
        cond = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"}, "code": code}
        if cs:
            cond["clinicalStatus"] = {"coding": [{"code": cs}]}
        if vs:
            cond["verificationStatus"] = {"coding": [{"code": vs}]}
        if cat:
            cond["category"] = [{"coding": [{"code": cat}]}]
        if ab:
            cond["abatementDateTime"] = ab
        whole = catalog.facts([cond], "p")
        want = any(entry(t, whole, catalog.mappings).outcome != "out" for t in live)
        assert opens(cond, "p") == want, cond
        seen.add(want)
    assert seen == {True, False}


def test_rows_spooled_to_disk_read_back_in_order(monkeypatch):
    """A screen's rows go to disk past a bound (rows.HELD) and past OPEN files are merged into one; read
    back they are every row, in (patient, trial) order, as often as asked."""
    import random

    from cds_service.screening import rows as spool

    monkeypatch.setattr(spool, "HELD", 50)
    monkeypatch.setattr(spool, "OPEN", 4)
    rng = random.Random(7)
    made = [{"patient": f"p{rng.randrange(300)}", "trial": f"T{rng.randrange(5)}", "n": i} for i in range(1000)]
    kept = spool.Rows()
    for i in range(0, len(made), 37):
        kept.add(list(made[i : i + 37]))
    assert kept.spooled and len(kept._files) <= 5  # noqa: SLF001 - the bound is the point
    want = sorted(made, key=lambda r: (r["patient"], r["trial"]))
    assert [(r["patient"], r["trial"]) for r in kept] == [(r["patient"], r["trial"]) for r in want]
    assert sorted(r["n"] for r in kept) == list(range(1000)) and len(kept) == 1000 and list(kept) == list(kept)


# --- blocks of types no criterion reads (prefilter.unread_only) ------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cds_service.screening.bulk import READ_TYPES, _parsed  # noqa: E402
from cds_service.screening.prefilter import unread_only  # noqa: E402

_TYPES = st.sampled_from(["Claim", "Encounter", "ExplanationOfBenefit", "ObservationDefinition", "Observations",
                          "observation", "Patient", "Observation", "Medication", "MedicationRequest",
                          "Condition"])  # fmt: skip
_KEY = st.sampled_from(['"resourceType":', '"resourceType" : ', '"resourceType":\r\t', '"resourc\\u0065Type":',
                        '"kind":'])  # fmt: skip
_VALUE = st.one_of(_TYPES.map(lambda t: f'"{t}"'), _TYPES.map(lambda t: f'"{t[:2]}\\u00{ord(t[2]):x}{t[3:]}"'))
_RESOURCE = st.tuples(_KEY, _VALUE, st.sampled_from(["", ',"id":"x"', ',"subject":{"reference":"Patient/p"}'])).map(
    lambda p: "{" + p[0] + p[1] + p[2] + "}"
)
_LINE = st.one_of(
    _RESOURCE,
    st.tuples(_RESOURCE, _RESOURCE).map(lambda p: p[0][:-1] + ',"contained":[' + p[1] + "]}"),  # contained
    st.tuples(_RESOURCE, _RESOURCE).map(lambda p: p[0][:-1] + "," + p[1][1:]),  # a key twice: the last wins
    st.sampled_from(["{not json", '["a list"]', " ", "", "\r"]),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_LINE, min_size=1, max_size=6))
def test_a_block_counted_unread_holds_only_lines_parsing_would_set_aside(lines):
    """Spacing, a key or a type hidden by a \\u escape, contained resources, a key written twice, junk and
    blank lines: a block is counted without parsing only if each of its lines, parsed, is of a type no
    criterion reads (or malformed), and it counts each of them once."""
    buf = b"".join(line.encode() + b"\n" for line in lines)
    kinds = [_parsed(line.encode())[0] for line in lines]
    n = unread_only(buf)
    if n:
        assert all(k in ("other_types", "malformed") for k in kinds), kinds
        assert n == len(lines) and "blank" not in kinds
    if any(k not in ("other_types", "malformed", "blank") for k in kinds):
        assert n == 0


def test_every_type_read_keeps_its_block_read():
    for t in sorted(READ_TYPES):
        block = b'{"resourceType":"Claim"}\n{"resourceType" :\t"' + t.encode() + b'","id":"1"}\n'
        assert unread_only(block) == 0, t
    assert unread_only(b'{"resourceType":"Claim"}\n{"resourceType":"Encounter"}\n') == 2
