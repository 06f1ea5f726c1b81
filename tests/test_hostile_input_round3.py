"""Hostile input, round three (issue 23, the findings round two left): each test here failed on the
code before its fix. Resource bounds are measured (peak memory, time), not assumed; servers are real
loopback sockets."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml
from helpers import open_service

from cds_service.cli import main
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


# --- 15. `import` is linear in the length of a bullet ------------------------------------------------------


def _record(criteria_text: str, nct: str = "NCT09999999") -> dict:
    return {
        "protocolSection": {
            "identificationModule": {"nctId": nct, "briefTitle": "A study"},
            "eligibilityModule": {"eligibilityCriteria": criteria_text},
        }
    }


LONG_BULLETS = {
    "names": "Inclusion Criteria:\n* " + "platelets age alt anc hemoglobin " * 2000,  # 64 KB, one line
    "wrapped": "Inclusion Criteria:\n* start\n" + "alt x age\n" * 6600,  # 64 KB over 6,600 wrapped lines
}


@pytest.mark.parametrize("kind", LONG_BULLETS)
def test_a_64_kb_bullet_imports_in_under_two_seconds(kind, tmp_path, capsys):
    text = LONG_BULLETS[kind]
    assert len(text) >= 64_000
    (tmp_path / "rec.json").write_text(json.dumps(_record(text)))
    started = time.perf_counter()
    status = main(["import", str(tmp_path / "rec.json"), "--out", str(tmp_path / "t" / "NCT09999999.yaml")])
    took = time.perf_counter() - started
    assert status in (0, 1) and took < 2.0, took  # before: 7.7 s and 13.6 s here (46 s in the review)
    bullet = yaml.safe_load((tmp_path / "t" / "NCT09999999.yaml").read_text())["criteria"][0]["text"]
    assert bullet.split() == text.split("*", 1)[1].split()  # every word kept, in order


def test_suggested_rules_still_read_the_clear_wording(catalog):
    from cds_service.authoring.ctgov import suggest_rule

    assert suggest_rule("Platelet count ≥ 100 x 10^9/L", catalog.mappings) == {
        "lab": {"var": "platelets", "op": ">=", "value": 100.0, "unit": "10*9/L"}
    }
    assert suggest_rule("ALT ≤ 2.5 x ULN", catalog.mappings) == {"lab": {"var": "alt", "op": "<=", "uln": 2.5}}
    assert suggest_rule("Aged 18 to 75 years", catalog.mappings) == {"age": {"min": 18, "max": 75}}


# --- 2. a bad trial file is left out and listed, within a time and memory bound ----------------------------

GOOD_TRIAL = "NCT06902844"
BOMB = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
HOSTILE_TRIAL_FILES: dict[str, bytes] = {
    "bad-utf8": b"id: NCT00000001\ntitle: caf\xe9 \xff\xfe\n",
    "deep-flow": b"id: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
    "deep-block": b"criteria:\n" + b"- " * 20_000 + b"x\n",
    "big-int": b"id: NCT00000001\nsites: " + b"9" * 5_000 + b"\n",
    "alias-bomb": (
        BOMB + "id: NCT00000009\ncriteria:\n  - {id: c1, type: inclusion, text: xxx, rule: {all: *i}}\n"
    ).encode(),
    "too-big": b"id: NCT00000001\n" + b"# padding\n" * 300_000,
}

LOAD_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from cds_service.eligibility.catalog import Catalog
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
cat = Catalog.load(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - started, "trials": sorted(cat.trials),
                  "problems": [str(p) for p in cat.problems],
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


@pytest.fixture
def hostile_trials(tmp_path) -> Path:
    """A trials folder: one good trial, and one file (or directory, or FIFO) per way of being bad."""
    folder = tmp_path / "trials"
    folder.mkdir()
    shutil.copy(ROOT / "trials" / f"{GOOD_TRIAL}.yaml", folder)
    shutil.copytree(ROOT / "trials" / "sources", folder / "sources")  # its quotes' source, for `lint`
    for name, data in HOSTILE_TRIAL_FILES.items():
        (folder / f"{name}.yaml").write_bytes(data)
    (folder / "a-directory.yaml").mkdir()
    os.mkfifo(folder / "a-fifo.yaml")  # reading it would block for ever
    return folder


def _bad_names() -> set[str]:
    return {*HOSTILE_TRIAL_FILES, "a-directory", "a-fifo"}


def test_bad_trial_files_are_left_out_and_listed_within_a_time_and_memory_bound(hostile_trials):
    """In a fresh process, as the service starts: before, it exited 1 (UnicodeDecodeError, ValueError,
    IsADirectoryError, RecursionError) or hung (the FIFO, the alias bomb)."""
    run = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(ROOT / "mappings"), str(hostile_trials)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got["trials"] == [GOOD_TRIAL]
    listed = {Path(p.split(":", 1)[0]).stem for p in got["problems"]}
    assert listed == _bad_names(), got["problems"]
    assert all("\n" not in p and len(p) < 300 for p in got["problems"])
    assert got["seconds"] < 5.0 and got["rss_growth_mb"] < 64, got  # measured: ~0.1 s, a few MB


def test_readyz_lists_the_bad_trial_files(hostile_trials, tmp_path):
    with open_service(tmp_path, trials_dir=hostile_trials) as c:
        ready = c.get("/readyz").json()
    assert ready["trials"] == 1
    assert {Path(p.split(":", 1)[0]).stem for p in ready["trial_file_problems"]} == _bad_names()


def test_lint_reports_each_bad_file_in_one_line_and_exits_1(hostile_trials, capsys):
    assert main(["lint", str(hostile_trials)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = out.splitlines()
    assert {Path(line.split(":", 1)[0]).stem for line in lines} == _bad_names() and len(lines) == len(_bad_names())


@pytest.mark.parametrize("name", HOSTILE_TRIAL_FILES)
def test_lint_of_one_bad_file_says_why(hostile_trials, name, capsys):
    assert main(["lint", str(hostile_trials / f"{name}.yaml")]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(str(hostile_trials / f"{name}.yaml") + ":")
