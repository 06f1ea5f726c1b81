"""`screen --fhir-server URL --since last` against HAPI FHIR JPA's real `$export` with `_since`: between two
screens a new SLE patient arrives, a washout lifts and a new exclusion is recorded; the worklist lists
those three changes, and the re-screened rows equal a full screen's."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from datetime import date, timedelta

import httpx
import pytest

from cds_service.settings import REPO_ROOT
from cds_service.worklist.runs import RunStore
from demo import synthetic as syn

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cds_service", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _post(base: str, resources: list[dict]) -> None:
    r = httpx.post(base, json=syn.bundle(resources, "transaction"), timeout=60,
                   headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert r.status_code < 300, r.status_code


def _rows(path) -> dict[tuple[str, str], dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return {(r["patient"], r["trial"]): r for r in csv.DictReader(f)}


def test_since_last_re_screens_what_changed_and_the_worklist_lists_it(hapi_server, tmp_path):
    """Re-screened twice from the same stored screen: from the full screen's copy of the export (the
    mirror), and, in a copy of the store without it, by reading each touched patient through the hook's
    searches. Both give the rows a full screen gives."""
    import os
    import shutil
    import sqlite3

    d1 = date.today()
    d2 = d1 + timedelta(days=20)
    tag = uuid.uuid4().hex[:8]
    a, b, c, d = (f"wl{tag}{x}" for x in "abcd")
    rituximab = syn.med_statement(b, "121191", "riTUXimab 10 MG/ML", d1 - timedelta(days=75),
                                  d1 - timedelta(days=45), status="completed")  # fmt: skip
    for pid in (a, b, c):
        _post(hapi_server.base, syn.eligible_patient(d1, pid) + ([rituximab] if pid == b else []))
    env = {**os.environ, "TRIAL_MATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}"}
    common = ["--fhir-server", hapi_server.base, "--workers", "1", "--max-poll-seconds", "2"]
    _cli(env, "screen", *common, "--out", str(tmp_path / "full1"), "--as-of", d1.isoformat())

    assert (tmp_path / "full1" / "mirror.sqlite3").is_file()
    shutil.copyfile(tmp_path / "store.sqlite3", tmp_path / "no-mirror.sqlite3")
    with sqlite3.connect(tmp_path / "no-mirror.sqlite3") as db:
        db.execute("UPDATE screen_run SET mirror = NULL")
    env_server = {**env, "TRIAL_MATCHER_DATABASE_URL": f"sqlite:///{tmp_path / 'no-mirror.sqlite3'}"}
    _post(hapi_server.base, syn.eligible_patient(d2, d))  # a new SLE patient
    _post(hapi_server.base, [syn.qualitative(c, "56888-1", True, d2 - timedelta(days=1), display="HIV 1+2 Ab+p24 Ag")])
    since = ["screen", *common, "--since", "last", "--as-of", d2.isoformat()]
    assert "re-screened" in _cli(env, *since, "--out", str(tmp_path / "since")).stderr
    assert "re-screened" in _cli(env_server, *since, "--out", str(tmp_path / "since2")).stderr

    store = RunStore(env["TRIAL_MATCHER_DATABASE_URL"])
    runs = store.runs()
    assert [r.kind for r in runs] == ["full", "incremental"]
    first = store.state(runs[0], runs)
    second_rows = {k for k, row in store.state(runs[1], runs).items() if row.run_id == runs[1].id}
    re_read = {p for p, _ in second_rows}
    assert {c, d} <= re_read and b in re_read and a not in re_read  # a changed nothing and had no bar
    lifted_bars = {p for (p, _), row in first.items() if row.eligible_from and d1 < row.eligible_from <= d2}
    assert re_read <= {c, d} | lifted_bars  # nobody else was read again

    out = _cli(env, "worklist", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    mine = {(r["list"], r["patient"]) for r in rows if r["patient"] in (a, b, c, d) and r["list"] != "bar-lifts-soon"}
    assert {p for lst, p in mine if lst == "newly-eligible"} == {b, d}
    assert {p for lst, p in mine if lst == "no-longer-eligible"} == {c}
    for r in rows:  # everyone else listed is explained by a bar of the first screen that lifted by d2
        if r["patient"] not in (a, b, c, d) and r["list"] != "bar-lifts-soon":
            assert r["list"] == "newly-eligible" and r["patient"] in lifted_bars, r

    # the re-screened rows, from the mirror and from the server, are the rows a full screen on d2 gives
    _cli(env, "screen", *common, "--no-store", "--out", str(tmp_path / "full2"), "--as-of", d2.isoformat())
    full = _rows(tmp_path / "full2" / "patients.csv")
    by_server = RunStore(env_server["TRIAL_MATCHER_DATABASE_URL"])
    server_runs = by_server.runs()
    server_state = by_server.state(server_runs[1], server_runs)
    assert {k for k, row in server_state.items() if row.run_id == server_runs[1].id} == second_rows
    for key in second_rows:
        for stored in (store.state(runs[1], runs)[key], server_state[key]):
            assert full[key]["status"] == stored.status, key
            assert full[key]["eligible_from"] == (stored.eligible_from.isoformat() if stored.eligible_from else ""), key
