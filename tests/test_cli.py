"""The console script: evaluate, trials, coverage; exit codes; --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from cds_service.cli import AREAS, main
from cds_service.settings import Settings
from demo import synthetic as syn
from demo.load import demo_bundles

AS_OF = date(2026, 11, 23)


@pytest.fixture
def bundle_file(tmp_path):
    def write(resources_or_bundle, name="b.json"):
        p = tmp_path / name
        p.write_text(json.dumps(resources_or_bundle))
        return str(p)

    return write


def test_evaluate_table_shows_every_trial_and_exits_0_on_a_match(bundle_file, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at 80 columns when not writing to a terminal
    path = bundle_file(syn.bundle(syn.eligible_patient(AS_OF)))
    code = main(["evaluate", path, "--as-of", AS_OF.isoformat(), "--no-color"])
    out = capsys.readouterr().out
    assert code == 0
    for t in ("NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119", "NCT06676631"):
        assert t in out
    assert "likely-eligible" in out and "Hemoglobin: 118 g/L (11.8 g/dL)" in out


def test_evaluate_json_is_the_report_shape(bundle_file, capsys):
    path = bundle_file(demo_bundles(AS_OF)["demo-bruno"])
    code = main(["evaluate", path, "--as-of", AS_OF.isoformat(), "--format", "json", "--trial", "NCT06902844"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["patient"] == "Patient/demo-bruno" and report["as_of"] == AS_OF.isoformat()
    (trial,) = report["trials"]
    assert trial["status"] == "possibly-eligible" and trial["eligible_from"]
    assert {"id", "type", "text", "outcome", "evidence", "missing"} <= set(trial["criteria"][0])


def test_evaluate_exits_1_when_nothing_matches(bundle_file, capsys):
    # too old for four trials; NCT06902844 has no upper age limit but excludes HIV
    old = [*syn.eligible_patient(AS_OF, birth="1930-01-01"), syn.condition("p1", icd="B20", display="HIV disease")]
    assert main(["evaluate", bundle_file(old), "--as-of", AS_OF.isoformat(), "--format", "json"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "/nonexistent.json"], "cannot read"),
        (["evaluate", "{file}", "--trial", "NCT00000000"], "unknown trial"),
    ],
)
def test_evaluate_errors_exit_2(bundle_file, capsys, args, message):
    path = bundle_file(syn.bundle(syn.eligible_patient(AS_OF)))
    assert main([a.replace("{file}", path) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_no_patient_is_an_error(bundle_file, capsys):
    assert main(["evaluate", bundle_file({"resourceType": "Bundle", "type": "collection"})]) == 2


def test_trials_and_coverage(capsys, catalog):
    assert main(["trials", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(catalog.trials)
    assert main(["coverage", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["total"] == r["computable"] + r["review"] for r in rows)


COMMANDS = ["evaluate", "trials", "coverage", "serve", *(c for cs in AREAS.values() for c in cs)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_each_command(command):
    out = subprocess.run([sys.executable, "-m", "cds_service", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and f"usage: trial-matcher {command}" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["no-such-command"]])
def test_the_full_help_and_a_typo_list_every_command(argv):
    out = subprocess.run([sys.executable, "-m", "cds_service", *argv], capture_output=True, text=True)
    listing = out.stdout + out.stderr
    assert all(c in listing for c in COMMANDS), listing


@pytest.mark.parametrize("store", [["--no-store"], []])
def test_screening_a_folder_imports_no_other_area_and_no_http_client(tmp_path, store):
    """The areas' commands are imported only when run: a screen of a folder starts without the authoring tools'
    commands, the worklist's, the API's models or httpx (which imports its own command-line tool), and keeping
    the run for the worklist (the default) imports none of them either."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n")
    argv = ["screen", str(folder), "--out", str(tmp_path / "out"), *store, "--workers", "1"]
    probe = (
        f"import sys; from cds_service.cli import main; code = main({argv!r}); "
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'click') or m in "
        "('cds_service.authoring.commands', 'cds_service.worklist.command', 'cds_service.api.models')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.split()[0] == "0" and out.stdout.rstrip().endswith("[]"), out.stdout + out.stderr
    assert (tmp_path / "out" / "patients.csv").is_file()


def _cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """The command line in its own process, with only these TRIAL_MATCHER_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIAL_MATCHER_")}
    return subprocess.run([sys.executable, "-m", "cds_service", *argv], capture_output=True, text=True,
                          env={**clean, **env}, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "client authentication is required: set TRIAL_MATCHER_PUBLIC_URL"),
        (
            {"TRIAL_MATCHER_PUBLIC_URL": "https://cds.example.org", "TRIAL_MATCHER_TRUSTED_ISSUERS": "[{not json"},
            "TRIAL_MATCHER_TRUSTED_ISSUERS is not a JSON list",
        ),
        (
            {"TRIAL_MATCHER_PUBLIC_URL": "https://cds.example.org", "TRIAL_MATCHER_TRUSTED_ISSUERS": '["iss"]'},
            "TRIAL_MATCHER_TRUSTED_ISSUERS is not a JSON list",
        ),
    ],
)
def test_serve_without_its_authentication_settings_says_so_in_one_line(env, said):
    """Hospital IT's first run: what to set, one line and exit 2, before uvicorn (which printed a traceback)."""
    out = _cli("serve", "--port", "1", **env)
    assert out.returncode == 2 and out.stderr.startswith(f"serve: {said}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("url", "psycopg", "said"),
    [
        ("mysql://clinic:s3cr3t@db.example.org/cds", True, "must start with sqlite:/// or postgresql://"),
        ("postgresql://clinic:s3cr3t@db.example.org/cds", False, "psycopg is not installed"),
        ("postgresql://clinic:s3cr3t@db.example.org/cds", True, None),
        ("sqlite:///var/feedback.sqlite3", False, None),
    ],
)
def test_a_store_that_cannot_open_is_said_before_start_without_its_password(monkeypatch, url, psycopg, said):
    """The service failed at start-up saying only "ValueError" (a mistyped URL) or, later, that a module was
    missing (PostgreSQL without psycopg, an optional dependency)."""
    import cds_service.settings as settings_module

    monkeypatch.setattr(settings_module, "psycopg_imports", lambda: psycopg)
    problem = Settings(auth_required=False, database_url=url).serve_problem()
    assert (problem is None) if said is None else (said in problem and "s3cr3t" not in problem), problem


def test_a_sqlite_file_that_cannot_be_made_is_said_before_start(tmp_path):
    """A folder on the path that is a file, or the path of a folder: refused in one line, not a traceback at
    start-up; a folder still to be made is fine (the store makes it)."""
    (tmp_path / "afile").write_text("")
    for path in (tmp_path / "afile" / "db.sqlite3", tmp_path, tmp_path / "afile" / "deeper" / "db.sqlite3"):
        problem = Settings(auth_required=False, database_url=f"sqlite:///{path}").serve_problem()
        assert problem is not None and "SQLite file cannot be made" in problem and str(tmp_path) not in problem
    for path in (tmp_path / "new" / "folders" / "db.sqlite3", tmp_path / "db.sqlite3"):
        assert Settings(auth_required=False, database_url=f"sqlite:///{path}").serve_problem() is None
    out = _cli("serve", "--port", "1", TRIAL_MATCHER_AUTH_REQUIRED="false",
               TRIAL_MATCHER_DATABASE_URL=f"sqlite:///{tmp_path}/afile/db.sqlite3")  # fmt: skip
    assert out.returncode == 2 and "SQLite file cannot be made" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_serve_with_a_mistyped_store_url_says_so_in_one_line():
    out = _cli("serve", "--port", "1", TRIAL_MATCHER_AUTH_REQUIRED="false",
               TRIAL_MATCHER_DATABASE_URL="postgress://clinic:s3cr3t@db/cds")  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("serve: TRIAL_MATCHER_DATABASE_URL must"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "s3cr3t" not in out.stderr


def test_a_setting_that_does_not_parse_is_named_without_its_value():
    out = _cli("trials", TRIAL_MATCHER_PORT="not-a-port-s3cr3t", TRIAL_MATCHER_HOOK_BUDGET_SECONDS="x")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "trials: setting TRIAL_MATCHER_PORT: Input should be a valid integer" in out.stderr
    assert "s3cr3t" not in out.stderr + out.stdout


def test_evidence_without_a_value_reads_as_its_label_and_date(capsys, monkeypatch):
    """A diagnosis on record has a date and no value: 'Systemic lupus erythematosus (2022-11-24)', never ': ,'."""
    monkeypatch.setenv("COLUMNS", "250")
    bruno = Path(__file__).resolve().parents[1] / "demo" / "patients" / "demo-bruno.json"
    assert main(["evaluate", str(bruno), "--as-of", AS_OF.isoformat(), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert ": ," not in out and re.search(r"[a-z] \(\d{4}-\d{2}-\d{2}\)", out)
