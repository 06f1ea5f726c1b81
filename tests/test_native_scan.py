"""The compiled scan of a block (native/, `prefilter.scan`) must judge every line as the regular expressions of
prefilter.py do: a line it calls outside is one `CohortFilter.outside` calls outside, and it hands every
other line back, parsed or routed by the same ids. Lines are built to make the bytes lie: escapes, spacing
around the colon, a key written over another, contained resources, references in text, odd ids."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trial_matcher_scan import scan as compiled
from trial_matcher_scan import unread_only as compiled_unread_only

from cds_service.screening import prefilter
from cds_service.screening.prefilter import named_ids, unsettled


def reference(buf: bytes, inside: dict[bytes, int]) -> list[tuple]:
    """What the regular expressions say of each line, in the compiled scan's shape (runs of outside lines
    joined, blank lines passed over)."""
    out: list[tuple] = []
    run: list[int] | None = None
    at = 0
    for line in buf.split(b"\n")[:-1]:
        start, end = at, at + len(line)
        at = end + 1
        if not line:
            continue
        ids = set() if unsettled(line) else named_ids(line)
        if ids and inside.keys().isdisjoint(ids):
            run = [run[0], end + 1, run[2] + 1] if run else [start, end + 1, 1]
            continue
        if run:
            out.append(tuple(run))
            run = None
        out.append((start, end, ids or None))
    if run:
        out.append(tuple(run))
    return out


_ID = st.sampled_from(["in-1", "out-1", "in-2", "Patient", "", "a.b", "in-1 x", "ïn", "in-1\\u0031"])
_REF = st.one_of(
    _ID.map(lambda i: f"Patient/{i}"),
    _ID.map(lambda i: f"https://h/fhir/Patient/{i}/_history/2"),
    _ID.map(lambda i: f"Patient\\/{i}"),
    _ID.map(lambda i: f"Patient/Patient/{i}"),
    _ID.map(lambda i: f'Patient/{i}\\"x'),
    st.just("Patient/"),
)
_KEY = st.sampled_from(['"resourceType":', '"resourceType" : ', '"resourceType"\t:\r', '"resourc\\u0065Type":',
                        '"resourceType"resourceType":', '"kind":'])  # fmt: skip
_TYPE = st.sampled_from(["Observation", "Patient", "Condition", "Medication", "MedicationRequest", "Patients",
                         "Pati\\u0065nt", "ConditionX"])  # fmt: skip
_PART = st.one_of(
    st.tuples(_KEY, _TYPE).map(lambda p: f'{p[0]}"{p[1]}"'),
    _REF.map(lambda r: f'"subject":{{"reference":"{r}"}}'),
    _REF.map(lambda r: f'"performer":[{{"reference":"{r}"}}]'),
    _REF.map(lambda r: f'"note":[{{"text":"see {r} today"}}]'),
    st.just('"subject":{"type":"Patient","identifier":{"value":"in-1"}}'),
    st.just('"contained":[{"resourceType":"Patient","id":"x"}]'),
    st.just('"text":"a \\\\ backslash"'),
    st.text(alphabet='{}[]":,\\/ Patient-1\t\r', max_size=12),
)
_LINE = st.one_of(
    st.lists(_PART, min_size=1, max_size=5).map(lambda ps: "{" + ",".join(ps) + "}"),
    st.sampled_from(["", " ", "\r", "{not json", "Patient/in-1", "Patient/out-1"]),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_LINE, min_size=1, max_size=8), st.sets(st.sampled_from([b"in-1", b"in-2", b"Patient", b""])))
def test_the_compiled_scan_judges_each_line_as_the_regular_expressions_do(lines, inside_ids):
    buf = b"".join(line.encode() + b"\n" for line in lines)
    inside = dict.fromkeys(inside_ids, 1)
    got = [(a, b, w if isinstance(w, int | type(None)) else set(w)) for a, b, w in compiled(buf, inside)]
    assert got == reference(buf, inside)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.sets(st.binary(max_size=4), max_size=3))
def test_the_compiled_scan_takes_any_bytes(raw, inside_ids):
    """Whatever the bytes (not UTF-8, NULs, lone backslashes at the end), the same answer and no crash."""
    buf = raw if raw.endswith(b"\n") else raw + b"\n"
    inside = dict.fromkeys(inside_ids, 1)
    got = [(a, b, w if isinstance(w, int | type(None)) else set(w)) for a, b, w in compiled(buf, inside)]
    assert got == reference(buf, inside)


def test_the_router_uses_the_compiled_scan_where_it_is_installed():
    assert prefilter.scan(b'{"subject":{"reference":"Patient/x"}}\n', {}) == [(0, 38, 1)]


_ANY_TYPE = st.sampled_from(["Claim", "Encounter", "ExplanationOfBenefit", "Observation", "Patient", "Condition",
                             "Medication", "MedicationRequest", "Observations", "observation",
                             "Obs\\u0065rvation"])  # fmt: skip
_UNREAD_LINE = st.one_of(
    st.tuples(_KEY, _ANY_TYPE).map(lambda p: f'{{{p[0]}"{p[1]}","id":"x"}}'),
    st.tuples(_KEY, _ANY_TYPE, _ANY_TYPE).map(lambda p: f'{{{p[0]}"{p[1]}","contained":[{{{p[0]}"{p[2]}"}}]}}'),
    st.tuples(_KEY, _ANY_TYPE).map(lambda p: f'{{"resourceType"\n:"{p[1]}"}}'),  # the colon on the next line
    st.sampled_from(["", " ", "\t\r", "\x0b", "\x0c", "{not json", '"a \\\\ backslash"', "\\u", "x\\"]),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_UNREAD_LINE, min_size=1, max_size=6))
def test_the_compiled_unread_test_counts_as_the_regular_expressions_do(lines):
    buf = b"".join(line.encode() + b"\n" for line in lines)
    assert compiled_unread_only(buf, prefilter._READ_NAMES) == prefilter.unread_by_expressions(buf)  # noqa: SLF001


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_the_compiled_unread_test_takes_any_bytes(raw):
    buf = raw if raw.endswith(b"\n") else raw + b"\n"
    assert compiled_unread_only(buf, prefilter._READ_NAMES) == prefilter.unread_by_expressions(buf)  # noqa: SLF001
