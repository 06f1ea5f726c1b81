"""The end of a screen: the rows of patients outside every cohort held compactly (rows.Rows.add_uniform),
and patients.csv written a batch of text at a time, neutralised cell by cell only where a cell may start as
a formula (csvsafe.may_hold_formula)."""

from __future__ import annotations

import csv
import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.screening import rows as spool
from cds_service.screening.csvsafe import FORMULA_STARTS, may_hold_formula, safe_cells
from cds_service.screening.funnel import ROW_FIELDS
from cds_service.screening.output import _patients_csv

# text built from what matters to CSV and to a spreadsheet: every formula start, delimiters, quotes, breaks
_CHARS = st.sampled_from([*FORMULA_STARTS, ",", '"', "'", ";", " ", "a", "7", "é"])
_TEXT = st.text(_CHARS, max_size=6)
_STARTS = st.tuples(st.sampled_from(FORMULA_STARTS), _TEXT).map("".join)  # a cell that starts as a formula
_CELL = st.one_of(_TEXT, _STARTS, st.integers(-5, 5), st.just(""))


def _csv_text(rows: list[list]) -> str:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_CELL, min_size=1, max_size=4), min_size=1, max_size=5))
def test_a_batch_said_safe_is_exactly_what_neutralising_every_cell_writes(rows):
    """The shortcut may raise a false alarm (a formula character inside a quoted cell) but never miss a cell
    that the cell-by-cell rule would change: where it says safe, the text is the neutralised text."""
    text = _csv_text(rows)
    neutral = _csv_text([safe_cells(r) for r in rows])
    if not may_hold_formula(text):
        assert text == neutral
    if text != neutral:
        assert may_hold_formula(text)


def test_each_batch_is_judged_on_its_own(tmp_path):
    """A formula id far into a large screen (past the first batch) is neutralised; ids around it are not."""
    rows = [{**dict.fromkeys(ROW_FIELDS, ""), "patient": f"p{i:06d}", "trial": "T", "pass": 1} for i in range(25_000)]
    rows[17_000]["patient"] = "=1+1"
    rows[3]["failed"] = "@x"
    _patients_csv(rows, tmp_path / "raw.csv", tmp_path / "safe.csv")
    with (tmp_path / "safe.csv").open(newline="", encoding="utf-8") as f:
        safe = list(csv.DictReader(f))
    with (tmp_path / "raw.csv").open(newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    assert [r["patient"] for r in raw] == [r["patient"] for r in rows]
    assert safe[17_000]["patient"] == "'=1+1" and safe[3]["failed"] == "'@x"
    assert [r for i, r in enumerate(safe) if i not in (3, 17_000)] == [
        r for i, r in enumerate(raw) if i not in (3, 17_000)
    ]


def test_uniform_rows_merge_in_order_with_evaluated_and_spooled_ones(monkeypatch):
    """Outside patients' rows (a template per trial and their ids) read back among the evaluated patients'
    rows, spooled or not, in (patient, trial) order, each with its own patient id, as often as asked."""
    monkeypatch.setattr(spool, "HELD", 40)
    rng = random.Random(3)
    ids = [f"p{i:04d}" for i in range(400)]
    rng.shuffle(ids)
    inside, outside = ids[:60], sorted(ids[60:])
    template = [{"patient": "", "trial": t, "status": "ineligible"} for t in ("A", "B", "C")]
    kept = spool.Rows()
    for i in range(0, 60, 7):
        kept.add([{"patient": p, "trial": t, "status": "possibly"} for p in inside[i : i + 7] for t in "CAB"])
    kept.add_uniform(template, outside)
    want = sorted(
        [(p, t, "possibly") for p in inside for t in "ABC"] + [(p, t, "ineligible") for p in outside for t in "ABC"]
    )
    assert kept.spooled and len(kept) == len(want) == 1200
    for _ in range(2):
        assert [(r["patient"], r["trial"], r["status"]) for r in kept] == want
    assert template[0]["patient"] == ""  # the template itself is never written into


# ids a CSV quotes, a spreadsheet would run, that sort oddly, or are empty
_ODD_IDS = st.sampled_from(["p1", "p2", "p10", "", "a,b", 'q"x', "l\nf", "c\rr", "=1+1", "-2", "@x", "\tt", " s",
                            "é", "😀", "\uff1dx", "p1 ", "'='", "n\x00l"])  # fmt: skip
_TAIL = st.sampled_from(["", "cohort entry", "=x", "a,b", 'q"', "-", "c1;c2"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ODD_IDS, unique=True), st.lists(_ODD_IDS, unique=True), _TAIL, _TAIL, st.integers(1, 3),
       st.sampled_from([3, 10_000]), st.sampled_from([1, 2, 10_000]))  # fmt: skip
def test_patients_csv_of_kept_rows_is_that_of_the_same_rows_one_by_one(tmp_path_factory, inside, outside, failed,
                                                                       status, trials, held, run):  # fmt: skip
    """Outside patients' rows written as text from their trials' rows (output._run_text), in runs of any
    length among evaluated rows held or spooled: both CSVs byte for byte those written row by row from the
    same rows as dicts."""
    tmp = tmp_path_factory.mktemp("csv")
    (spool.HELD, spool.RUN_PATIENTS), before = (held, run), (spool.HELD, spool.RUN_PATIENTS)
    try:
        outside = sorted(set(outside) - set(inside))
        full = dict.fromkeys(ROW_FIELDS, "")
        names = ["T2", "T10", "=T"][:trials]
        kept = spool.Rows()
        for i in range(0, len(inside), 2):
            kept.add([{**full, "patient": p, "trial": t, "status": "possibly", "pass": 3} for p in inside[i : i + 2]
                      for t in names])  # fmt: skip
        template = [{**full, "trial": t, "status": status, "failed": failed, "fail": 1} for t in sorted(names)]
        kept.add_uniform(template, outside)
        _patients_csv(kept, tmp / "raw.csv", tmp / "safe.csv")
        _patients_csv(list(kept), tmp / "raw1.csv", tmp / "safe1.csv")
    finally:
        spool.HELD, spool.RUN_PATIENTS = before
    for name in ("raw", "safe"):
        assert (tmp / f"{name}.csv").read_bytes() == (tmp / f"{name}1.csv").read_bytes()
    with (tmp / "raw.csv").open(newline="", encoding="utf-8") as f:
        assert len(list(csv.reader(f))) == 1 + len(kept) == 1 + (len(inside) + len(outside)) * trials


def test_a_patient_both_outside_and_evaluated_is_written_row_by_row(tmp_path):
    """Never by construction; if it were, rows.Overlap sends patients.csv back to writing row by row."""
    full = dict.fromkeys(ROW_FIELDS, "")
    kept = spool.Rows([{**full, "patient": "p2", "trial": "B", "status": "possibly"}])
    kept.add_uniform([{**full, "trial": t, "status": "ineligible"} for t in "AC"], ["p1", "p2", "p3"])
    _patients_csv(kept, tmp_path / "raw.csv", tmp_path / "safe.csv")
    with (tmp_path / "raw.csv").open(newline="", encoding="utf-8") as f:
        got = [(r["patient"], r["trial"]) for r in csv.DictReader(f)]
    assert got == [("p1", "A"), ("p1", "C"), ("p2", "A"), ("p2", "B"), ("p2", "C"), ("p3", "A"), ("p3", "C")]
