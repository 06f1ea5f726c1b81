"""A card a clinician reads in five seconds: the trial, how many criteria are met, what to order or record,
and the date a bar lifts; the study team's review list and the evidence stay behind the checklist link. A
suggestion creates a referral the EHR can carry out. Expectations come from /match, not from a trial list."""

from __future__ import annotations

from datetime import date

import pytest
from helpers import ext, open_service, plain

from demo.hook_request import hook_request
from demo.load import demo_bundles

AS_OF = date(2026, 11, 23)
LIMIT = 600  # characters of Markdown, beside the trial's own caveats (notes), which are never cut


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cards")
    with open_service(folder, as_of=AS_OF, public_url="http://127.0.0.1:8000") as c:
        yield c


def cards_and_report(client, patient: str) -> tuple[list[dict], dict[str, dict]]:
    cards = client.post("/cds-services/trial-matcher", json=hook_request(patient, as_of=AS_OF)).json()["cards"]
    bundle = demo_bundles(AS_OF)[patient]
    report = client.post("/match", json=bundle, params={"as_of": AS_OF.isoformat()}).json()
    return cards, {t["id"]: t for t in report["trials"]}


@pytest.mark.parametrize("patient", sorted(demo_bundles(AS_OF)))
def test_a_card_is_a_few_lines(client, patient):
    cards, trials = cards_and_report(client, patient)
    for card in cards:
        t = trials[ext(card)["trialId"]]
        notes = len("; ".join(t.get("notes", []))) * 2  # escaped, never cut
        assert len(card["detail"]) <= LIMIT + notes, card["detail"]
        text = plain(card["detail"])
        met = sum(1 for c in t["criteria"] if c["outcome"] == "pass")
        assert f"{met} of {len(t['criteria'])} criteria met" in text
        if t.get("eligible_from"):
            assert f"Not before {t['eligible_from']}" in text
        standing = {r for c in t["criteria"] if c["outcome"] == "review" for r in c["review"]}
        assert not any(r in text for r in standing if len(r) > 20)  # the study team's list is in the checklist
        if any(c["outcome"] == "unknown" for c in t["criteria"]):
            assert "Order or record:" in text


def test_the_richest_patient_reads_in_five_seconds(client):
    cards, _ = cards_and_report(client, "demo-amara")
    assert cards and max(len(c["detail"]) for c in cards) <= LIMIT


def test_the_checklist_holds_the_rest_behind_the_link(client):
    cards, trials = cards_and_report(client, "demo-eli")
    card = cards[0]
    link = next(x["url"] for x in card["links"] if "/checklist/" in x["url"])
    page = client.get(link.removeprefix("http://127.0.0.1:8000")).text
    t = trials[ext(card)["trialId"]]
    assert all(c["id"] in page for c in t["criteria"])  # every criterion, with its outcome and evidence


def test_a_referral_the_ehr_can_create(client):
    cards, _ = cards_and_report(client, "demo-bruno")
    for card in cards:
        suggestion = card["suggestions"][0]
        action = suggestion["actions"][0]
        assert suggestion["isRecommended"] and action["type"] == "create"
        resource = action["resource"]
        assert resource["resourceType"] == "ServiceRequest" and resource["status"] == "draft"
        assert resource["subject"] == {"reference": "Patient/demo-bruno"}
        assert ext(card)["trialId"] in resource["code"]["text"]
        assert "/checklist/" in resource["note"][0]["text"]  # the study team opens the same checklist
