"""Trials are complete, quoted and reviewable data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cds_service.eligibility.rules import RuleError
from cds_service.eligibility.trials import Trial, load_trials
from cds_service.fhir.mappings import load_mappings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
TRIAL_IDS = ["NCT06902844", "NCT07274059", "NCT06010472", "NCT06801119", "NCT06676631"]

# Criteria counted by hand against the registry pages (inclusion, exclusion). Items the page runs
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


def _norm(text: str) -> str:
    text = text.replace("•", " ").replace("\\>", ">").replace("\\<", "<").replace("\\[", "[").replace("\\]", "]")
    text = text.replace("\\^", "^")
    return re.sub(r"\s+", "", text).lower()


def test_all_five_trials_load(catalog):
    assert sorted(catalog.trials) == sorted(TRIAL_IDS)


@pytest.mark.parametrize("trial_id", TRIAL_IDS)
def test_every_criterion_quotes_text_and_has_rule_or_review(catalog, trial_id):
    trial = catalog.trials[trial_id]
    counts = (
        sum(c.type == "inclusion" for c in trial.criteria),
        sum(c.type == "exclusion" for c in trial.criteria),
    )
    assert counts == EXPECTED_COUNTS[trial_id]
    for c in trial.criteria:
        assert len(c.text.strip()) >= 10, c.id
        assert (c.rule is None) != (c.review is None), c.id
        if c.rule is not None:
            assert c.compiled is not None, c.id
        else:
            assert len(c.review.strip()) >= 10, f"{c.id}: a review needs its reason"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds not beside the repository")
@pytest.mark.parametrize("trial_id", TRIAL_IDS)
def test_quoted_text_is_on_the_registry_page(catalog, trial_id):
    """Each quoted fragment (split at '...') appears verbatim on the seed page, whitespace aside."""
    page = _norm((SEEDS / f"{trial_id}.txt").read_text(encoding="utf-8"))
    for c in catalog.trials[trial_id].criteria:
        for fragment in c.text.split("..."):
            frag = _norm(fragment)
            if len(frag) >= 3:
                assert frag in page, f"{trial_id} {c.id}: not on the page: {fragment.strip()[:80]!r}"


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
