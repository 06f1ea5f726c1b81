"""Adding a trial is data only: import from a ClinicalTrials.gov v2 record, lint with fixes, diff."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.api.app import create_app
from cds_service.authoring.lint import lint_file
from cds_service.cli import main
from cds_service.eligibility.catalog import Catalog
from cds_service.settings import Settings
from demo import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent
RECORDS = sorted((ROOT / "tests" / "fixtures" / "ctgov").glob("*.json"))


@pytest.mark.parametrize("record", RECORDS, ids=[r.stem for r in RECORDS])
def test_a_registry_record_imports_and_lints_clean(trials_dir, record, capsys):
    nct = json.loads(record.read_text())["protocolSection"]["identificationModule"]["nctId"]
    assert main(["import", str(record)]) == 0
    data = yaml.safe_load((trials_dir / f"{nct}.yaml").read_text())
    assert (trials_dir / "sources" / f"{nct}.json").is_file()  # the quotes' source is kept beside
    assert main(["lint"]) == 0 and "clean" in capsys.readouterr().err
    text = json.loads(record.read_text())["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    for c in data["criteria"]:
        assert ("rule" in c) != ("review" in c)
        if "review" in c:
            assert c["review"] == "imported, not yet encoded" and c["text"] in text.replace("\n  ", " ")


def test_nested_bullets_suggestions_and_structured_fields(trials_dir):
    assert main(["import", str(RECORDS[0])]) == 0
    data = yaml.safe_load((trials_dir / "NCT09000001.yaml").read_text())
    by_id = {c["id"]: c for c in data["criteria"]}
    assert data["sponsor"] == "Example University Hospital" and data["phase"] == "Phase 1"
    assert data["min_age"] == 18 and data["max_age"] == 70 and data["sites"][0]["city"] == "Springfield"
    assert by_id["age"]["rule"] == {"age": {"min": 18, "max": 70}}
    assert {"inc-4.1", "inc-4.2", "inc-4.3", "inc-4.4"} <= set(by_id)  # organ function's sub-bullets
    assert by_id["inc-4.1"]["suggested_rule"] == {"lab": {"var": "anc", "op": ">=", "value": 1.0, "unit": "10*9/L"}}
    assert by_id["inc-4.3"]["suggested_rule"] == {  # one rule per threshold of the bullet
        "all": [{"lab": {"var": "alt", "op": "<=", "uln": 2.5}}, {"lab": {"var": "ast", "op": "<=", "uln": 2.5}}]
    }
    assert "suggested_rule" not in by_id["inc-2"]  # no clear pattern: nothing guessed


def test_a_suggested_rule_never_decides_a_verdict(trials_dir):
    assert main(["import", str(RECORDS[0])]) == 0
    path = trials_dir / "NCT09000001.yaml"
    data = yaml.safe_load(path.read_text())
    data.pop("draft")  # encoded by a person: every placeholder becomes a reason; suggestions stay suggestions
    for c in data["criteria"]:
        if c.get("review") == "imported, not yet encoded":
            c["review"] = "the study team decides from the source text"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    catalog = Catalog.load(ROOT / "mappings", trials_dir)
    low_anc = [
        *[r for r in syn.eligible_patient(date(2026, 11, 23)) if "751-8" not in json.dumps(r)],
        syn.quantity("p1", "751-8", 0.4, "10*3/uL", date(2026, 11, 20)),
    ]
    result = catalog.engine.evaluate(catalog.facts(low_anc, "p1"), catalog.trials["NCT09000001"], date(2026, 11, 23))
    anc = next(c for c in result.criteria if c.id == "inc-4.1")
    assert anc.outcome == "review" and result.status != "ineligible"
    assert any("not yet encoded" in n for n in result.notes)


def _lint_one(tmp_path, mutate) -> list[str]:
    data = yaml.safe_load((ROOT / "trials" / "NCT06801119.yaml").read_text())
    mutate(data)
    path = tmp_path / "NCT06801119.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    from cds_service.fhir.mappings import load_mappings

    return [str(p) for p in lint_file(path, load_mappings(ROOT / "mappings"), check_source=False)[1]]


def _rule(data, cid, rule):
    next(c for c in data["criteria"] if c["id"] == cid)["rule"] = rule


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: _rule(d, "inc-7.4", {"lab": {"var": "sp02", "op": ">=", "value": 92, "unit": "%"}}),
            "did you mean 'spo2'?",
        ),
        (
            lambda d: _rule(d, "exc-7", {"medication": {"classes": ["live_vacines"], "within": "30 days"}}),
            "'live_vaccines'",
        ),
        (lambda d: _rule(d, "exc-8", {"condition": {"groups": ["asthmaa"]}}), "did you mean 'asthma'?"),
        (lambda d: _rule(d, "exc-8", {"conditon": {"groups": ["asthma"]}}), "did you mean 'condition'?"),
        (lambda d: _rule(d, "exc-8", {"condition": {"group": ["asthma"]}}), "'group': did you mean 'groups'?"),
        (
            lambda d: d["criteria"][0].update({"also_reveiw": "x"}),
            "unknown field 'also_reveiw'; did you mean 'also_review'?",
        ),
        (lambda d: d["criteria"][0].pop("type"), "missing field 'type'"),
        (
            lambda d: _rule(d, "inc-7.1", {"lab": {"var": "anc_count", "op": ">=", "value": 1.5, "unit": "10*9/L"}}),
            "unknown variable 'anc_count'; did you mean 'anc'?",
        ),
    ],
    ids=["variable", "class", "group", "rule-keyword", "rule-field", "criterion-field", "missing-field", "affix"],
)
def test_lint_names_file_line_criterion_and_fix(tmp_path, mutate, expected):
    problems = _lint_one(tmp_path, mutate)
    assert problems and any(expected in p for p in problems), problems
    for p in problems:
        file, line, rest = p.split(":", 2)
        assert file.endswith("NCT06801119.yaml") and int(line) > 1 and "criterion" in rest


def test_lint_exit_codes_and_yaml_errors(trials_dir, capsys):
    assert main(["lint"]) == 0
    assert main(["lint", str(trials_dir / "missing.yaml")]) == 2
    (trials_dir / "NCT06801119.yaml").write_text("id: NCT06801119\ncriteria: [\n  - oops")
    assert main(["lint"]) == 1
    out = capsys.readouterr().out
    assert "NCT06801119.yaml:" in out and "not valid YAML" in out and "Traceback" not in out


def test_one_bad_file_does_not_stop_the_service_and_evaluate_says_what_to_fix(trials_dir, tmp_path, capsys):
    bad = trials_dir / "NCT06801119.yaml"
    bad.write_text(bad.read_text().replace("var: spo2", "var: sp02"))
    settings = Settings(trials_dir=trials_dir, database_url=f"sqlite:///{tmp_path}/db.sqlite3", auth_required=False)
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz").json()
        served = {t["id"] for t in c.get("/trials").json()}
    assert "NCT06801119" not in served and len(served) == len(list(trials_dir.glob("*.yaml"))) - 1
    assert any("did you mean 'spo2'" in p for p in ready["trial_file_problems"])
    assert all(p.startswith(f"{bad.name}:") for p in ready["trial_file_problems"])  # no path: /readyz is public
    assert str(trials_dir) not in str(ready)
    bundle = tmp_path / "p.json"
    bundle.write_text(json.dumps(syn.bundle(syn.eligible_patient(date.today()))))
    assert main(["evaluate", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "NCT06801119.yaml:" in err and "did you mean 'spo2'" in err and "Traceback" not in err
    # one trial that loaded, asked for by name: evaluated, with the file left out still said
    other = sorted(served)[0]
    assert main(["evaluate", str(bundle), "--trial", other, "--format", "json"]) in (0, 1)  # eligible or not
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())  # the console wraps long lines
    assert "did you mean 'spo2'" in said and "were left out" in said
    assert [t["id"] for t in json.loads(captured.out)["trials"]] == [other]
    assert main(["evaluate", str(bundle), "--trial", "NCT06801119"]) == 2  # the one left out: refused, not unknown


def test_diff_lists_criteria_whose_registry_text_changed(trials_dir, tmp_path, capsys):
    assert main(["diff", "NCT06801119"]) == 0
    page = (trials_dir / "sources" / "NCT06801119.txt").read_text()
    newer = tmp_path / "newer.txt"
    newer.write_text(page.replace("Individuals with asthma, severe allergies", "Individuals with severe asthma"))
    assert main(["diff", "NCT06801119", "--against", str(newer)]) == 1
    out = capsys.readouterr().out
    assert "criterion exc-8" in out and out.count("criterion ") == 1
    assert main(["diff", "NCT00000000"]) == 2


def test_diff_against_another_trials_record_or_page_is_refused(trials_dir, tmp_path, capsys):
    """Another trial's record would read as every criterion changed: the command names whose record it is."""
    trial = sorted(p.stem for p in trials_dir.glob("NCT*.yaml"))[0]
    record = RECORDS[0]
    other = json.loads(record.read_text())["protocolSection"]["identificationModule"]["nctId"]
    assert other != trial
    assert main(["diff", trial, "--against", str(record)]) == 2
    assert capsys.readouterr().err.strip() == f"diff: {record} is the registry record of {other}, not {trial}"
    page = tmp_path / "page.txt"
    page.write_text(f"Some study\n\nClinical Study ID\n\n{other}\n\nInclusion Criteria:\n  • Adults\n")
    assert main(["diff", trial, "--against", str(page)]) == 2
    assert f"is the registry record of {other}, not {trial}" in capsys.readouterr().err
    page.write_text(page.read_text().replace(other, trial))  # its own page: compared as before
    assert main(["diff", trial, "--against", str(page)]) in (0, 1)
    assert "registry record of" not in capsys.readouterr().err


def test_importing_a_saved_registry_page_says_what_import_takes(trials_dir, capsys):
    page = sorted((trials_dir / "sources").glob("*.txt"))[0]
    assert main(["import", str(page)]) == 2
    err = capsys.readouterr().err
    assert "ClinicalTrials.gov API v2 JSON" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (trials_dir / "sources" / f"{page.stem}.json").exists()
