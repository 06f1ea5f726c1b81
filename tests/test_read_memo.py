"""The reader's two hot helpers as rewritten for speed: `_codings` with its type checks written out, and `_d`
keeping the dates it has read by their text. Each against its plain form, over generated JSON values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.fhir import codes, read
from cds_service.fhir.kept import Kept
from cds_service.fhir.read import Invalid, _codings, _d, _l, _o, _s


def _plain_codings(cc: Any) -> list[tuple[str, str, str | None]]:
    """_codings as it was written before, through _o, _l and _s."""
    out = []
    for c in _l(_o(cc).get("coding")):
        c = _o(c)
        out.append((_s(c.get("system")) or "", _s(c.get("code")) or "", _s(c.get("display"))))
    return out


def _outcome(f, value):  # noqa: ANN001, ANN202
    try:
        return ("ok", f(value))
    except Invalid as e:
        return ("invalid", str(e))


_SCALAR = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.booleans(), st.floats(allow_nan=False))
_CODING = st.one_of(
    st.fixed_dictionaries({}, optional={"system": _SCALAR, "code": _SCALAR, "display": _SCALAR, "x": _SCALAR}),
    _SCALAR,
    st.lists(_SCALAR, max_size=2),
)
_CONCEPT = st.one_of(
    _SCALAR,
    st.fixed_dictionaries({}, optional={"coding": st.one_of(_SCALAR, st.lists(_CODING, max_size=4)), "text": _SCALAR}),
)


@settings(max_examples=400, deadline=None)
@given(_CONCEPT)
def test_codings_reads_and_rejects_what_the_plain_form_does(cc):
    assert _outcome(_codings, cc) == _outcome(_plain_codings, cc)


@pytest.mark.parametrize("coding", [None, {}, {"system": None, "code": None}, 3, "x", [], {"display": 1}])
def test_codings_of_each_coding_shape_as_the_plain_form(coding):
    """The shapes generation found or may miss: a null coding reads as an empty one (found by the test above in
    CI, after the rewrite had made it invalid)."""
    cc = {"coding": [coding]}
    assert _outcome(_codings, cc) == _outcome(_plain_codings, cc)


_DATE_TEXT = st.one_of(
    st.from_regex(r"\A\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,12})?)?(Z|[+-]\d{2}:\d{2}))?)?)?\Z"),
    st.text(max_size=40),
    st.sampled_from(["9999-12-31", "2024-02-30", "1799-12-31", "2024-02-29T10:00:00Z", "2024"]),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(_DATE_TEXT, st.integers(), st.none()), max_size=6))
def test_kept_dates_are_the_dates_read_again(values):
    """Asked twice, every value gives what reading it afresh gives (an invalid one raises both times)."""
    for v in values + values:
        assert _outcome(_d, v) == _outcome(lambda x: None if x is None else read._read_date(x), v)


def test_the_date_memo_keeps_only_short_valid_texts_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(read, "_DATES", Kept(10, read.DATE_CHARS))
    for day in range(1, 29):
        _d(f"2024-02-{day:02d}")
        assert len(read._DATES) <= 10
    long = "2024-02-01T10:00:00." + "0" * 30 + "Z"
    assert _d(long).isoformat() == "2024-02-01" and long not in read._DATES
    for bad in ("9999-12-31", "2024-13-01"):
        with pytest.raises(Invalid):
            _d(bad)
        assert bad not in read._DATES


def test_the_system_memo_reads_as_working_it_out_afresh_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(codes, "_SYSTEMS_READ", Kept(5, 200))
    spelled = ["http://loinc.org/", "urn:oid:2.16.840.1.113883.6.96", "urn:x", "HTTP://LOINC.ORG", "u" * 300]
    for s in spelled * 3 + [f"urn:site:{i}" for i in range(20)]:
        assert codes.canonical_system(s) == codes._canonical(s)
        assert len(codes._SYSTEMS_READ) <= 5
    assert "u" * 300 not in codes._SYSTEMS_READ
