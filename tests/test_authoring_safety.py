"""Authoring mistakes that would hide patients are lint errors (issue 24): an implausible threshold, a coded
answer the variable does not know, a source bullet no criterion quotes, import placeholders in a file
that is not a draft. A draft is never evaluated. Suggestions come one per threshold. `dose_per_kg`."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from helpers import ext, open_service

from cds_service.authoring.suggest import suggest_rule
from cds_service.cli import main
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.trials import Trial
from demo import synthetic as syn
from demo.hook_request import prefetch_for

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "fixtures" / "ctgov" / "NCT09000001.json"
AS_OF = date(2026, 11, 23)
SEEDS = sorted(p.name for p in (ROOT / "trials").glob("*.yaml"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def lint(path: Path, capsys) -> tuple[int, str]:
    status = main(["lint", str(path)])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("name", SEEDS)
def test_every_trial_in_the_catalogue_lints_clean(name, capsys):
    status, out = lint(ROOT / "trials" / name, capsys)
    assert status == 0 and out == "", out


@pytest.mark.parametrize(
    ("trial", "old", "new", "expected"),
    [
        (
            "NCT06801119",
            'value: 80, unit: "g/L"',
            'value: 80, unit: "g/dL"',
            "80 g/dL is not a plausible hemoglobin; did you mean 80 g/L?",
        ),
        ("NCT06676631", "in: [III, IV, III+V, IV+V]", "in: [3, 4, III+V, IV+V]", "did you mean III?"),
        ("NCT06010472", "grades: [A], min: 1", "grades: [a], min: 1", "a is not a BILAG-2004"),
    ],
    ids=["80-g-per-dL", "classes-as-numbers", "grade-a"],
)
def test_clinical_slips_are_lint_errors_with_the_fix(trials_dir, capsys, trial, old, new, expected):
    path = trials_dir / f"{trial}.yaml"
    edit(path, old, new)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), start=1) if new in text)
    status, out = lint(path, capsys)
    assert status == 1 and expected in out, out
    assert f"{trial}.yaml:{line}:" in out  # the line of the value
    if "classes" in expected or "III" in expected:
        assert "4 is not" in out and "did you mean IV?" in out
    served = Catalog.load(ROOT / "mappings", trials_dir)
    assert trial not in served.trials  # the service leaves the file out rather than hide every patient


def test_a_deleted_bullet_is_named_with_its_line_in_the_source(trials_dir, capsys):
    path = trials_dir / "NCT06902844.yaml"
    text = path.read_text()
    path.write_text(re.sub(r"\n  - id: exc-15\n.*?(?=\n  - id: )", "", text, flags=re.S))
    status, out = lint(path, capsys)
    source = (trials_dir / "sources" / "NCT06902844.txt").read_text().splitlines()
    line = next(n for n, s in enumerate(source, start=1) if "risk of severe bleeding" in s)
    assert status == 1 and f"sources/NCT06902844.txt:{line}:" in out and "risk of severe bleeding" in out, out
    data = yaml.safe_load(path.read_text())  # listed as deliberately left out, with a reason: clean again
    quote = "15)Subjects have a significant risk of severe bleeding assessed by investigator."
    data["left_out"] = [{"text": quote, "reason": "a judgement of the investigator, not in the record"}]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    assert lint(path, capsys)[0] == 0
    data["left_out"][0]["text"] = "a bullet the source never had"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    status, out = lint(path, capsys)
    assert status == 1 and "left_out: quote not found" in out


def test_diff_reports_bullets_added_changed_and_removed(trials_dir, tmp_path, capsys):
    record = json.loads(RECORD.read_text())
    assert main(["import", str(RECORD)]) == 0
    capsys.readouterr()
    elig = record["protocolSection"]["eligibilityModule"]
    text = elig["eligibilityCriteria"]
    text = text.replace("* Active or latent tuberculosis.\n", "")
    text = text.replace(
        "Serum IgA below the lower limit of normal.", "Serum IgA below the lower limit of normal for age."
    )
    elig["eligibilityCriteria"] = text.rstrip() + "\n* Prior allogeneic stem cell transplantation.\n"
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(record))
    assert main(["diff", "NCT09000001", "--against", str(newer)]) == 1
    out = capsys.readouterr().out
    assert "bullet removed" in out and "tuberculosis" in out
    assert "bullet changed" in out and "Serum IgA below the lower limit of normal for age." in out
    assert "bullet added" in out and "allogeneic stem cell" in out
    assert main(["diff", "NCT09000001", "--against", str(RECORD)]) == 0


def test_import_writes_a_draft_that_lints_with_a_warning_and_placeholders_without_it_are_errors(trials_dir, capsys):
    assert main(["import", str(RECORD)]) == 0
    path = trials_dir / "NCT09000001.yaml"
    assert yaml.safe_load(path.read_text())["draft"] is True
    status, out = lint(path, capsys)
    assert status == 0 and "warning: NCT09000001: draft, not yet encoded" in out and "inc-4.1" in out
    edit(path, "draft: true\n", "")
    status, out = lint(path, capsys)
    assert status == 1 and "criterion inc-4.1: still holds the import placeholder" in out
    assert "NCT09000001" not in Catalog.load(ROOT / "mappings", trials_dir).trials


def test_a_draft_never_gives_a_card_nor_a_verdict(trials_dir, tmp_path, capsys):
    assert main(["import", str(RECORD)]) == 0  # requires Hb >= 8 g/dL; this patient has 7.5
    low_hb = [r for r in syn.eligible_patient(AS_OF) if "718-7" not in json.dumps(r)]
    low_hb.append(syn.quantity("p1", "718-7", 7.5, "g/dL", AS_OF - timedelta(days=3)))
    with open_service(tmp_path, trials_dir=trials_dir, as_of=AS_OF) as client:
        report = client.post("/match", json=syn.bundle(low_hb), params={"trial": "NCT09000001"}).json()
        (result,) = report["trials"]
        assert result["status"] == "draft" and result["criteria"] == [] and "not yet encoded" in result["notes"][0]
        hook = {
            "hook": "patient-view",
            "hookInstance": "0f9a7f5e-0000-4000-8000-000000000024",
            "context": {"patientId": "p1", "userId": "Practitioner/1"},
            "prefetch": prefetch_for(low_hb, "p1"),
        }
        cards = client.post("/cds-services/trial-matcher", json=hook).json()["cards"]
        assert cards and "NCT09000001" not in {ext(c)["trialId"] for c in cards}
    bundle = tmp_path / "p.json"
    bundle.write_text(json.dumps(syn.bundle(low_hb)))
    main(["evaluate", str(bundle), "--trial", "NCT09000001", "--as-of", AS_OF.isoformat(), "--no-color"])
    assert "NCT09000001 draft: not yet encoded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hb ≥ 8 g/dL, WBC ≥ 3.0 × 10^9/L, ANC ≥ 1.5 × 10^9/L and platelets ≥ 75 × 10^9/L",
            {"all": [
                {"lab": {"var": "hemoglobin", "op": ">=", "value": 8.0, "unit": "g/dL"}},
                {"lab": {"var": "wbc", "op": ">=", "value": 3.0, "unit": "10*9/L"}},
                {"lab": {"var": "anc", "op": ">=", "value": 1.5, "unit": "10*9/L"}},
                {"lab": {"var": "platelets", "op": ">=", "value": 75.0, "unit": "10*9/L"}},
            ]},
        ),
        (
            "ALT ≤ 3 × ULN; AST ≤ 3 × ULN; total bilirubin ≤ 1.5 × ULN",
            {"all": [
                {"lab": {"var": "alt", "op": "<=", "uln": 3.0}},
                {"lab": {"var": "ast", "op": "<=", "uln": 3.0}},
                {"lab": {"var": "bilirubin_total", "op": "<=", "uln": 1.5}},
            ]},
        ),
        (
            "Heart and lung: LVEF ≥ 50% and SpO2 > 94% on room air",
            {"all": [
                {"lab": {"var": "lvef", "op": ">=", "value": 50.0, "unit": "%"}},
                {"lab": {"var": "spo2", "op": ">", "value": 94.0, "unit": "%"}},
            ]},
        ),
        (
            "Absolute neutrophil count \\< 1×10\\^9 /L, or hemoglobin \\<60 g/L",
            {"any": [
                {"lab": {"var": "anc", "op": "<", "value": 1.0, "unit": "10*9/L"}},
                {"lab": {"var": "hemoglobin", "op": "<", "value": 60.0, "unit": "g/L"}},
            ]},
        ),
    ],
    ids=["blood-count", "liver", "heart-lung", "either-excludes"],
)  # fmt: skip
def test_one_suggested_rule_per_threshold_with_strictness_kept(catalog, text, expected):
    assert suggest_rule(text, catalog.mappings) == expected


def _dose_trial(catalog: Catalog) -> Trial:
    rule = {
        "medication": {"classes": ["glucocorticoids"], "within": "6 months", "dose_per_kg": {"op": ">", "value": 1}}
    }
    return Trial.model_validate(
        {
            "id": "NCT00000024", "title": "t", "sponsor": "s", "phase": "1", "status": "Recruiting", "url": "u",
            "sites": [], "source": "test", "entry": {"groups": ["sle"], "text": "quoted text"},
            "criteria": [{"id": "c1", "type": "exclusion", "text": "quoted text", "rule": rule}],
        }
    ).compile(catalog.mappings)  # fmt: skip


def test_dose_per_kg_uses_the_weight_nearest_the_dose(catalog):
    trial = _dose_trial(catalog)
    d = lambda n: AS_OF - timedelta(days=n)  # noqa: E731
    base = [r for r in syn.eligible_patient(AS_OF) if r["resourceType"] in ("Patient", "Condition")]
    pulse = syn.med_statement("p1", "8640", "prednisone", d(120), d(100), status="completed", dose_mg=60)
    then_50kg = syn.quantity("p1", "29463-7", 50, "kg", d(110))  # 60 mg / 50 kg = 1.2 mg/kg/day then
    now_80kg = syn.quantity("p1", "29463-7", 80, "kg", d(2))  # 0.75 mg/kg/day with today's weight

    def outcome(resources: list[dict]) -> str:
        return catalog.engine.criterion(catalog.facts(resources, "p1"), trial.criteria[0], AS_OF).outcome

    assert outcome([*base, pulse, then_50kg, now_80kg]) == "fail"  # excluded: above 1 mg/kg/day at the time
    assert outcome([*base, pulse, syn.quantity("p1", "29463-7", 70, "kg", d(105)), now_80kg]) == "pass"
    assert outcome([*base, pulse, now_80kg]) == "unknown"  # no weight near the course: not today's weight
    old = syn.med_statement("p1", "8640", "prednisone", d(400), d(300), status="completed", dose_mg=60)
    assert outcome([*base, old, syn.quantity("p1", "29463-7", 40, "kg", d(350))]) == "pass"  # outside 6 months
    with pytest.raises(ValueError, match="dose_per_kg takes op and value"):
        bad = {"medication": {"classes": ["glucocorticoids"], "dose_per_kg": {"op": ">", "value": 1, "x": 1}}}
        Trial.model_validate(
            {
                **_dose_trial(catalog).model_dump(),
                "criteria": [{"id": "c1", "type": "exclusion", "text": "quoted text", "rule": bad}],
            }
        ).compile(catalog.mappings)
