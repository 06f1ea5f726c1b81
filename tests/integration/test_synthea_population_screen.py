"""A screen of a Synthea general population (its own modules only) plus SLE-care patients: the funnel
starts at the cohort entry, and no patient without SLE on record is counted likely or possibly eligible.

Whether a patient has SLE is read here from the raw NDJSON with the codes a clinician would name (SNOMED
CT 55464009 and the Lupus erythematosus concept 200936003 Synthea's lupus module records, ICD-10-CM M32
but M32.0 drug-induced), independently of the service's maps.
"""

from __future__ import annotations

import csv
import shutil
from datetime import date
from pathlib import Path

import orjson
import pytest

from cds_service.cli import main
from cds_service.screening.funnel import COHORT_STEP
from demo import synthea

pytestmark = pytest.mark.integration

REFERENCE = date(2026, 11, 2)
GENERAL, SLE_CARE = 150, 6


def _has_sle(condition: dict) -> bool:
    for c in condition.get("code", {}).get("coding", []):
        code = str(c.get("code", ""))
        if code in ("55464009", "200936003") or (code.startswith("M32") and not code.startswith("M32.0")):
            return True
    return False


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """One export of both runs, the ids of the SLE-care patients, and of every patient with SLE."""
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("SYNTHEA SKIPPED: Java 17+ and Maven are needed to run Synthea")
    work = tmp_path_factory.mktemp("population")
    synthea.generate(GENERAL, 11, work / "general", REFERENCE, sle_care=False)
    synthea.generate(SLE_CARE, 7, work / "sle", REFERENCE)
    export = work / "export"
    export.mkdir()
    for part in ("general", "sle"):
        for f in (work / part / "ndjson").glob("*.ndjson"):
            with (export / f.name).open("ab") as out:
                out.write(f.read_bytes())
    sle_care = {orjson.loads(x)["id"] for x in (work / "sle" / "ndjson" / "Patient.ndjson").read_bytes().splitlines()}
    with_sle = set()
    for line in (export / "Condition.ndjson").read_bytes().splitlines():
        cond = orjson.loads(line)
        if _has_sle(cond):
            with_sle.add(cond["subject"]["reference"].split("/")[-1])
    return export, sle_care, with_sle


def test_the_screen_starts_at_the_door(population, tmp_path):
    export, sle_care, with_sle = population
    out = tmp_path / "out"
    argv = ["screen", str(export), "--out", str(out), "--as-of", REFERENCE.isoformat(), "--workers", "2"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "patients.csv").open(newline="", encoding="utf-8")))
    patients = {r["patient"] for r in rows}
    assert len(patients) == GENERAL + SLE_CARE and sle_care <= with_sle
    shown = {r["patient"] for r in rows if r["status"] in ("likely-eligible", "possibly-eligible")}
    assert shown and shown <= with_sle  # nobody without SLE on record is counted eligible
    assert sle_care <= {r["patient"] for r in rows if r["failed"] != COHORT_STEP}  # every SLE patient enters
    funnel = list(csv.DictReader((out / "funnel.csv").open(newline="", encoding="utf-8")))
    for trial in {f["trial"] for f in funnel}:
        steps = [f for f in funnel if f["trial"] == trial]
        first = steps[0]
        assert first["criterion"] == COHORT_STEP and int(first["remaining_before"]) == len(patients)
        outside = sum(1 for r in rows if r["trial"] == trial and r["failed"] == COHORT_STEP)
        assert int(first["failed_here"]) == outside >= len(patients - with_sle)
    assert "cohort entry" in (out / "funnel.html").read_text(encoding="utf-8")


def test_the_screening_log_of_a_synthea_population_adds_up(population, tmp_path, monkeypatch, catalog):
    """The sponsor's log from the stored screen: screened = likely + possibly + not assessed + failed, every
    patient counted once per trial, and each failure named by the trial file's own quoted text."""
    from cds_service.settings import get_settings

    export, _, _ = population
    monkeypatch.setenv("TRIAL_MATCHER_DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    get_settings.cache_clear()
    try:
        argv = ["screen", str(export), "--out", str(tmp_path / "out"), "--as-of", REFERENCE.isoformat()]
        assert main([*argv, "--workers", "2"]) == 0
        for trial in (t for t in catalog.trials.values() if not t.draft):
            out = tmp_path / "log" / trial.id
            args = ["screening-log", "--trial", trial.id, "--from", REFERENCE.replace(day=1).isoformat(),
                    "--to", REFERENCE.isoformat(), "--out", str(out)]  # fmt: skip
            assert main(args) == 0
            (month,) = list(csv.DictReader((out / "screening-log.csv").open(newline="", encoding="utf-8")))
            parts = sum(int(month[k]) for k in ("likely", "possibly", "not_assessed", "failed"))
            assert int(month["screened"]) == parts == GENERAL + SLE_CARE, trial.id
            failures = list(csv.DictReader((out / "screening-failures.csv").open(newline="", encoding="utf-8")))
            assert sum(int(f["patients"]) for f in failures) == int(month["failed"])
            quoted = {c.text for c in trial.criteria} | {trial.entry.text}
            assert failures and all(f["text"] in quoted for f in failures), trial.id
            assert "<svg" in (out / "screening-log.html").read_text(encoding="utf-8")
    finally:
        get_settings.cache_clear()
