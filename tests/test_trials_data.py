"""Trials are complete, quoted and reviewable data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import SEED_TRIALS

from cds_service.authoring.sources import source_text, unquoted
from cds_service.eligibility.rules import RuleError
from cds_service.eligibility.trials import Trial, load_trials
from cds_service.fhir.mappings import load_mappings

ROOT = Path(__file__).resolve().parent.parent
TRIAL_IDS = sorted(p.stem for p in (ROOT / "trials").glob("NCT*.yaml"))

# The seed trials' criteria counted by hand against the registry pages (inclusion, exclusion). Items the page runs
# together on one line are separate criteria; option lists numbered as items (NCT06010472 7-9) stay
# inside their parent. See the comment at the top of each trial file.
EXPECTED_COUNTS = {
    "NCT06902844": (7, 28),  # inclusion 1, 2.1-2.3, 3-5; exclusion 1-6, 7.1-7.6, 8-23
    "NCT07274059": (15, 11),  # 7 bullets, the organ-function bullet split into 9 requirements
    "NCT06010472": (
        9,
        15,
    ),  # inclusion 1-6 (7-9 are 6's options), 10-12; exclusion 1-7 (8-9 are 7's), 10.1, 10.2, 11-16
    "NCT06801119": (13, 9),  # inclusion 1-6, 7.1-7.6, 8; exclusion 1-9
    "NCT06676631": (16, 0),  # 11 bullets, organ function split into 6; the page lists no exclusions
}


def test_every_trial_file_loads(catalog):
    assert sorted(catalog.trials) == TRIAL_IDS
    assert set(catalog.trials) >= SEED_TRIALS


@pytest.mark.parametrize("trial_id", TRIAL_IDS)
def test_every_criterion_quotes_text_and_has_rule_or_review(catalog, trial_id):
    trial = catalog.trials[trial_id]
    counts = (
        sum(c.type == "inclusion" for c in trial.criteria),
        sum(c.type == "exclusion" for c in trial.criteria),
    )
    if trial_id in EXPECTED_COUNTS:  # a new trial has no hand count; the quote check below covers it
        assert counts == EXPECTED_COUNTS[trial_id]
    for c in trial.criteria:
        assert len(c.text.strip()) >= 10, c.id
        assert (c.rule is None) != (c.review is None), c.id
        if c.rule is not None:
            assert c.compiled is not None, c.id
        else:
            assert len(c.review.strip()) >= 10, f"{c.id}: a review needs its reason"


@pytest.mark.parametrize("trial_id", TRIAL_IDS)
def test_quoted_text_is_in_the_trial_source(catalog, trial_id):
    """Each quoted fragment (split at '...') appears verbatim in the source kept beside the trial
    (trials/sources/: the registry page or the ClinicalTrials.gov record), whitespace aside."""
    source = source_text(ROOT / "trials", trial_id)
    assert source is not None, f"{trial_id}: no source in trials/sources/ to check its quotes against"
    assert not unquoted(catalog.trials[trial_id], source)


def test_trial_metadata(catalog):
    for t in catalog.trials.values():
        assert t.url == f"https://clinicaltrials.gov/study/{t.id}"
        assert t.sponsor and t.title and t.phase and t.status


def _trial_with_rule(rule: dict, criterion_type: str = "inclusion") -> dict:
    return {
        "id": "NCT00000001",
        "title": "t",
        "sponsor": "s",
        "phase": "1",
        "status": "Recruiting",
        "url": "https://clinicaltrials.gov/study/NCT00000001",
        "sites": [],
        "source": "test",
        "entry": {"groups": ["sle"], "text": "some quoted text"},
        "criteria": [{"id": "c1", "type": criterion_type, "text": "some quoted text", "rule": rule}],
    }


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"lab": {"var": "anc_typo", "op": ">=", "value": 1, "unit": "10*9/L"}}, "unknown variable"),
        ({"lab": {"var": "hemoglobin", "op": ">=", "value": 6, "unit": "mg/mL/s"}}, "not convertible"),
        ({"lab": {"var": "hemoglobin", "op": ">=", "value": 6}}, "needs value and unit"),
        ({"lab": {"var": "alt", "op": "=>", "uln": 3}}, "op must be"),
        ({"condition": {"groups": ["lupus"]}}, "unknown condition group"),
        ({"medication": {"classes": ["steroids"]}}, "unknown medication class"),
        ({"medication": {"classes": ["biologics"], "within": "2 fortnights"}}, "cannot read window"),
        # a lookback has no "more than": it read as the bare 6 months (a duration is onset_before, min_duration)
        ({"medication": {"classes": ["biologics"], "within": "more than 6 months"}}, "onset_before"),
        ({"condition": {"groups": ["malignancy"], "within": "more than 5 years"}}, "lookback"),
        ({"lab": {"var": "anc", "op": ">=", "value": 1, "unit": "10*9/L", "within": "more than 2 weeks"}}, "lookback"),
        ({"procedure": {"groups": ["plasmapheresis"], "within": "more than 3 months"}}, "lookback"),
        ({"condition": {"groups": ["malignancy"], "except": ["skin_bcc_scc"]}}, "except_review"),
        ({"frobnicate": {}}, "unknown rule kind"),
        ({"all": [], "any": []}, "one key"),
    ],
)
def test_bad_rules_fail_at_load(catalog, rule, message):
    with pytest.raises(RuleError, match=message):
        Trial.model_validate(_trial_with_rule(rule)).compile(catalog.mappings)


def test_criterion_needs_exactly_one_of_rule_or_review():
    data = _trial_with_rule({"age": {"min": 18}})
    data["criteria"][0]["review"] = "also a review"
    with pytest.raises(ValueError, match="exactly one"):
        Trial.model_validate(data)
    data["criteria"][0].pop("rule")
    data["criteria"][0].pop("review")
    with pytest.raises(ValueError, match="exactly one"):
        Trial.model_validate(data)


def test_file_name_must_be_trial_id(tmp_path):
    mappings = load_mappings(ROOT / "mappings")
    (tmp_path / "NCT00000002.yaml").write_text(yaml.safe_dump(_trial_with_rule({"age": {"min": 18}})))
    with pytest.raises(RuleError, match="file name"):
        load_trials(tmp_path, mappings)


def test_a_new_trial_file_joins_the_catalogue_and_the_api(tmp_path):
    """Dropping a trial YAML (and its source) into the trials folder is all it takes: the app serves it."""
    import shutil

    from fastapi.testclient import TestClient

    from cds_service.api.app import create_app
    from cds_service.settings import Settings

    folder = tmp_path / "trials"
    shutil.copytree(ROOT / "trials", folder)
    text = (folder / "NCT06801119.yaml").read_text(encoding="utf-8")
    (folder / "NCT09999999.yaml").write_text(
        text.replace("id: NCT06801119", "id: NCT09999999").replace("study/NCT06801119", "study/NCT09999999")
    )
    shutil.copy(folder / "sources" / "NCT06801119.txt", folder / "sources" / "NCT09999999.txt")
    settings = Settings(trials_dir=folder, database_url=f"sqlite:///{tmp_path}/db.sqlite3", auth_required=False)
    with TestClient(create_app(settings)) as c:
        ids = {t["id"] for t in c.get("/trials").json()}
        assert ids == {*TRIAL_IDS, "NCT09999999"} and c.get("/readyz").json()["trials"] == len(ids)
        assert c.get("/trials/NCT09999999/ResearchStudy").status_code == 200
        catalog = c.app.state.catalog
    assert not unquoted(catalog.trials["NCT09999999"], source_text(folder, "NCT09999999"))
