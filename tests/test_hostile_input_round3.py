"""Hostile input, round three (issue 23, the findings round two left): each test here failed on the
code before its fix. Resource bounds are measured (peak memory, time), not assumed; servers are real
loopback sockets."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import duckdb
import pytest

from cds_service.screening.bulk import ReadStats
from cds_service.screening.csvsafe import safe_cell
from cds_service.screening.output import write_all
from cds_service.screening.run import Funnel, Screening

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 23)


def _row(pid: str, **over: object) -> dict:
    base = {"patient": pid, "trial": "NCT00000001", "status": "ineligible", "eligible_from": "", "pass": 1,
            "fail": 0, "unknown": 0, "review": 0, "failed": "", "unknowns": ""}  # fmt: skip
    return base | over


def _screening(rows: list[dict]) -> Screening:
    return Screening(rows, Funnel(), ReadStats(patients={r["patient"] for r in rows}), 1.0, 1.0)


# --- 11. CSV cells that a spreadsheet would run as a formula are neutralised -----------------------------

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_get_a_leading_quote(value):
    assert safe_cell(value) == "'" + value
    assert safe_cell("p-1") == "p-1" and safe_cell(-3) == -3 and safe_cell("") == ""


def test_patient_ids_that_are_formulas_are_inert_in_patients_csv_and_exact_in_parquet(tmp_path, catalog):
    rows = [_row(pid) for pid in [*FORMULAS, "ordinary-1"]]
    paths = write_all(_screening(rows), catalog, tmp_path)
    with paths["patients.csv"].open(newline="", encoding="utf-8") as f:
        written = [r["patient"] for r in csv.DictReader(f)]
    assert written == ["'" + v for v in FORMULAS] + ["ordinary-1"]  # before: the formulas as written
    got = duckdb.connect().execute("SELECT patient FROM read_parquet(?)", [str(paths["patients.parquet"])])
    assert [r[0] for r in got.fetchall()] == [*FORMULAS, "ordinary-1"]  # the data itself is not altered
    assert not list(tmp_path.glob(".*raw*"))


# --- 13. the Parquet conversion declares its column types ------------------------------------------------


def test_mostly_numeric_patient_ids_convert_to_parquet(tmp_path, catalog):
    rows = [_row(str(i)) for i in range(25_000)] + [_row("p-late", eligible_from="2027-01-31")]
    paths = write_all(_screening(rows), catalog, tmp_path)  # before: a DuckDB conversion error at the end
    con = duckdb.connect()
    described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(paths["patients.parquet"])]).fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert types["patient"] == "VARCHAR" and types["pass"] == "INTEGER" and types["eligible_from"] == "DATE"
    late = con.execute("SELECT eligible_from FROM read_parquet(?) WHERE patient = 'p-late'",
                       [str(paths["patients.parquet"])]).fetchone()  # fmt: skip
    assert late == (date(2027, 1, 31),)
