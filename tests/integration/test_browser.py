"""Real headless Chromium follows a checklist link from a real hook response.

Screenshots (desktop, phone, forged and expired links) are kept in test-artifacts/browser/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cds_service.views.checklists import OUTCOME_LABEL, STATUS_LABEL
from demo.hook_request import hook_request
from demo.load import demo_bundles

from .test_faults_privacy_shutdown import Service

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "browser" / "checklist.mjs"
ARTIFACTS = ROOT / "test-artifacts" / "browser"


def _missing() -> str | None:
    if not shutil.which("chromium"):
        return "Debian's chromium is not installed (scripts/browser-deps.sh installs it as root)"
    if not shutil.which("node"):
        return "node is not installed"
    if not (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").exists():
        return "playwright-core is not installed (npm ci --prefix tests/browser)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_checklist_in_a_real_browser(tmp_path):
    (tmp_path / "main").mkdir()
    (tmp_path / "short").mkdir()
    main = Service(tmp_path / "main", TRIAL_MATCHER_CHECKLIST_TTL_SECONDS="300")
    short = Service(tmp_path / "short", TRIAL_MATCHER_CHECKLIST_TTL_SECONDS="1")
    try:
        expired_card = httpx.post(f"{short.url}/cds-services/trial-matcher", json=hook_request("demo-amara")).json()
        expired_url = next(lk["url"] for lk in expired_card["cards"][0]["links"] if "checklist" in lk["label"].lower())
        request = tmp_path / "hook.json"
        request.write_text(json.dumps(hook_request("demo-bruno")))
        time.sleep(1.5)  # the short-lived link expires meanwhile
        run = subprocess.run(
            ["node", str(SCRIPT), main.url, str(request), str(ARTIFACTS), expired_url],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        bruno = httpx.post(f"{main.url}/cds-services/trial-matcher", json=hook_request("demo-bruno"))
        report = httpx.post(f"{main.url}/match", json=demo_bundles()["demo-bruno"], params={"trial": seen["trialId"]})
    finally:
        main.stop()
        short.stop()
    assert seen["hookStatus"] == 200 and seen["cards"] == len(bruno.json()["cards"]) > 0
    assert seen["status"] == 200 and seen["cacheControl"] == "no-store"
    # the page says what the service's report of the same patient and trial says, criterion by criterion
    trial = report.json()["trials"][0]
    assert trial["id"] == seen["trialId"] and seen["h1"] == trial["title"]
    heading = STATUS_LABEL[trial["status"]] + (f" from {trial['eligible_from']}" if trial.get("eligible_from") else "")
    assert seen["statusHeading"] == heading
    assert seen["rows"] == len(trial["criteria"]) > 0
    assert [o.strip("✓✗?! ") for o in seen["outcomes"]] == [OUTCOME_LABEL[c["outcome"]] for c in trial["criteria"]]
    assert seen["registryLink"] == f"https://clinicaltrials.gov/study/{seen['trialId']}"
    assert seen["firstTabTarget"] == "Skip to content"
    assert seen["mobileOverflow"] is False and seen["printHidesHeader"] is True
    assert seen["forgedStatus"] == 404 and "not valid" in seen["forgedText"]
    assert seen["expiredStatus"] == 410 and "expired" in seen["expiredText"]
    for shot in ("checklist-desktop.png", "checklist-phone.png", "checklist-forged.png", "checklist-expired.png"):
        assert (ARTIFACTS / shot).stat().st_size > 5000


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_funnel_page_renders_in_chromium(tmp_path):
    """The screening funnel page, opened from disk in headless Chromium: every chart and table is there."""
    import csv
    from datetime import date

    import orjson

    from cds_service.cli import main
    from demo.load import demo_bundles, resources

    export = tmp_path / "export"
    export.mkdir()
    for bundle in demo_bundles(date(2026, 11, 23)).values():
        for r in resources(bundle):
            with (export / f"{r['resourceType']}.ndjson").open("ab") as f:
                f.write(orjson.dumps(r) + b"\n")
    out = tmp_path / "out"
    assert main(["screen", str(export), "--out", str(out), "--as-of", "2026-11-23", "--workers", "1"]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    page = (out / "funnel.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    trials = {row["trial"] for row in csv.DictReader((out / "funnel.csv").open())}
    assert dom.count("<svg") == len(trials) and dom.count("<rect") > len(trials)
    assert all(t in dom for t in trials)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "funnel.png"
    subprocess.run(["chromium", *flags, "--window-size=1000,1400", f"--screenshot={shot}", page], timeout=120)
    assert shot.stat().st_size > 10_000
