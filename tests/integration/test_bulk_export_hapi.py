"""`trial-matcher screen --fhir-server`: a real Bulk Data $export from HAPI FHIR JPA gives /match's verdicts."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import date

import pytest
from helpers import reading_settings
from starlette.testclient import TestClient

from cds_service.api.app import create_app
from cds_service.settings import REPO_ROOT
from demo.load import demo_bundles

pytestmark = pytest.mark.integration


def test_screen_a_hapi_bulk_export_gives_the_hooks_verdicts(hapi_server, tmp_path):
    as_of = date.today()
    out = tmp_path / "screen"
    cmd = [sys.executable, "-m", "cds_service", "screen", "--fhir-server", hapi_server.base, "--out", str(out),
           "--as-of", as_of.isoformat(), "--workers", "1", "--max-poll-seconds", "2"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = {p.name.split(".")[0] for p in (out / "export").glob("*.ndjson")}
    assert exported >= {"Condition", "Observation", "Patient"}
    with (out / "patients.csv").open(newline="", encoding="utf-8") as f:
        screened = {(r["patient"], r["trial"]): r["status"] for r in csv.DictReader(f)}
    settings = reading_settings(
        hapi_server.base, tmp_path / "db.sqlite3", as_of=as_of, hook_budget_seconds=30, fhir_timeout_seconds=20
    )
    with TestClient(create_app(settings)) as service:
        for pid in demo_bundles():  # loaded into every test server (conftest)
            report = service.post("/match", params={"patient": pid}).json()
            assert report["trials"]
            for trial in report["trials"]:
                assert screened[(pid, trial["id"])] == trial["status"], (pid, trial["id"])
