"""Tests follow the catalogue (issue 24 #6): adding a trial file keeps the suite green.

A copy of trials/ gets new trial files built from the fixture records in tests/fixtures/ctgov/ the way an
author would: imported, then minimally encoded (suggestions promoted, every other placeholder given a
reason), plus one left a draft. Each must lint clean; with the service pointed at that folder (settings
`trials_dir`), cards equal what /match finds open and a draft shows nowhere; and the catalogue-dependent
test modules run again, in a subprocess, against the enlarged catalogue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ext, open_service

from cds_service.authoring.ctgov import IMPORTED, import_record
from cds_service.authoring.lint import lint_paths
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.mappings import load_mappings
from cds_service.screening.funnel import row
from demo.hook_request import hook_request
from demo.load import demo_bundles

ROOT = Path(__file__).resolve().parent.parent
RECORDS = sorted((ROOT / "tests" / "fixtures" / "ctgov").glob("*.json"))
DRAFT_ID = "NCT09000099"
# Modules whose expectations depend on the catalogue the service loads (they build it from settings).
# Not tests/test_cli.py: it compares the CLI (settings) with conftest's `catalog` fixture, which always
# loads trials/, so the two disagree by construction when the settings point elsewhere.
CATALOGUE_MODULES = [
    "tests/test_orders.py",
    "tests/test_service.py",
    "tests/test_cards.py",
    "tests/test_checklist.py",
    "tests/test_dismissals.py",
    "tests/test_sandbox.py",
    "tests/test_cds_hooks_conformance.py",
]


def write_trial(folder: Path, record: dict[str, Any], data: dict[str, Any]) -> None:
    (folder / "sources" / f"{data['id']}.json").write_text(json.dumps(record), encoding="utf-8")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    (folder / f"{data['id']}.yaml").write_text(text, encoding="utf-8")


def encode_minimally(data: dict[str, Any]) -> dict[str, Any]:
    """What an author does first: promote each suggestion, give every other placeholder its reason."""
    data = {k: v for k, v in data.items() if k != "draft"}
    for c in data["criteria"]:
        if c.get("review") != IMPORTED:
            continue
        del c["review"]
        if "suggested_rule" in c:
            c["rule"] = c.pop("suggested_rule")
        else:
            c["review"] = "the study team decides from the registry text"
    return data


@pytest.fixture(scope="module")
def enlarged(tmp_path_factory) -> Path:
    """trials/ plus each fixture record encoded, plus a draft."""
    folder = tmp_path_factory.mktemp("catalogue") / "trials"
    shutil.copytree(ROOT / "trials", folder)
    mappings = load_mappings(ROOT / "mappings")
    for path in RECORDS:
        record = json.loads(path.read_text(encoding="utf-8"))
        write_trial(folder, record, encode_minimally(import_record(record, mappings)))
    draft = json.loads(RECORDS[0].read_text(encoding="utf-8"))
    draft["protocolSection"]["identificationModule"]["nctId"] = DRAFT_ID
    write_trial(folder, draft, import_record(draft, mappings))
    return folder


def test_new_trial_files_lint_clean_and_the_draft_only_warns(enlarged):
    problems = lint_paths([enlarged], load_mappings(ROOT / "mappings"))
    assert not [str(p) for p in problems if p.is_error]
    assert [p.trial for p in problems] == [DRAFT_ID]  # one warning: what is still unencoded
    catalog = Catalog.load(ROOT / "mappings", enlarged)
    added = {json.loads(r.read_text())["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS}
    assert added | {DRAFT_ID} <= set(catalog.trials) and not catalog.problems


@pytest.mark.parametrize("patient", sorted(demo_bundles()))
def test_cards_follow_the_catalogue_and_a_draft_is_never_shown(enlarged, tmp_path, patient):
    with open_service(tmp_path, trials_dir=enlarged) as client:
        cards = client.post("/cds-services/trial-matcher", json=hook_request(patient)).json()["cards"]
        report = client.post("/match", json=demo_bundles()[patient]).json()
    status = {t["id"]: t["status"] for t in report["trials"]}
    assert status[DRAFT_ID] == "draft"
    open_ = {t for t, s in status.items() if s in ("likely-eligible", "possibly-eligible")}
    assert {ext(c)["trialId"] for c in cards} == open_ and DRAFT_ID not in open_


def test_a_screen_row_of_a_draft_says_draft(enlarged):
    catalog = Catalog.load(ROOT / "mappings", enlarged)
    bundle = demo_bundles()["demo-amara"]
    (result,) = catalog.report(catalog.facts(bundle), date.today(), [DRAFT_ID]).trials
    assert row("demo-amara", result)["status"] == "draft" and result.criteria == []


def test_catalogue_dependent_modules_pass_with_the_new_trials(enlarged):
    """The modules that read the configured catalogue, run again against the enlarged one."""
    env = {**os.environ, "TRIAL_MATCHER_TRIALS_DIR": str(enlarged)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *CATALOGUE_MODULES]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
