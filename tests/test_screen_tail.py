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
from cds_service.screening.output import _patients_csv
from cds_service.screening.run import ROW_FIELDS

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
