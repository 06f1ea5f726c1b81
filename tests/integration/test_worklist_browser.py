"""The worklist page in real headless Chromium: sign-in with the admin token, the three lists, a link to a
patient's stored checklist. The desktop screenshot is kept for the README (docs/worklist.png)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.service import ServiceProcess
from cds_service.cli import main
from cds_service.settings import get_settings
from tests.test_worklist import D1, D2, _population, _write_export

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
MISSING = None if shutil.which("chromium") and shutil.which("node") else "chromium or node is not installed"


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_worklist_in_a_real_browser(tmp_path, monkeypatch):
    db = tmp_path / "feedback.sqlite3"  # the service's store (ServiceProcess names it so)
    monkeypatch.setenv("TRIAL_MATCHER_DATABASE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()
    try:
        for n, (day, pop) in enumerate(zip((D1, D2), _population(), strict=True)):
            export = _write_export(tmp_path / f"export{n}", pop)
            args = ["screen", str(export), "--out", str(tmp_path / f"out{n}"), "--as-of", day.isoformat()]
            assert main([*args, "--workers", "1"]) == 0
    finally:
        get_settings.cache_clear()
    service = ServiceProcess(tmp_path, TRIAL_MATCHER_ADMIN_TOKEN="worklist-admin-token-1")
    try:
        run = subprocess.run(
            ["node", str(ROOT / "tests" / "browser" / "worklist.mjs"), service.url, "worklist-admin-token-1",
             str(ARTIFACTS)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        service.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["anonymousStatus"] == 401 and seen["anonymousHasPatients"] is False
    assert seen["wrongTokenAlert"] is True and seen["cookieHttpOnly"] is True
    assert seen["h1"] == "Screening worklist"
    assert set(seen["lists"]["newly-eligible"]) == {"pb", "pd"}
    assert set(seen["lists"]["no-longer-eligible"]) == {"pc"}
    assert seen["mobileOverflow"] is False
    assert seen["rowPatient"] == seen["linkedPatient"] and seen["rowCriteria"] > 0 and seen["rowOutcomes"]
    shot = ARTIFACTS / "worklist-desktop.png"
    assert shot.stat().st_size > 5000
    shutil.copyfile(shot, ROOT / "docs" / "worklist.png")
