"""CDS Hooks 2.0 field rules where this service used to deviate (found by driving it with an independent
client): delete actions, extension keys, accepted feedback, prefetch keys not asked for, missing data."""

from __future__ import annotations

import uuid

import pytest
from helpers import ext, open_service, plain

from demo.hook_request import hook_request


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with open_service(tmp_path_factory.mktemp("conf")) as c:
        yield c


def test_delete_actions_name_one_relative_reference_each(client):
    orders = [
        {
            "resourceType": "MedicationRequest",
            "id": f"draft-{i}",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": "Patient/demo-amara"},
            "medicationCodeableConcept": {"text": name},
        }
        for i, name in enumerate(["riTUXimab 10 MG/ML", "belimumab 120 MG"], start=1)
    ]
    req = hook_request("demo-amara")
    req["hook"] = "order-sign"
    req["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": o} for o in orders],
    }
    cards = client.post("/cds-services/trial-order-sign", json=req).json()["cards"]
    assert cards
    for card in cards:
        deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
        assert deletes and all(
            isinstance(a["resourceId"], str) and a["resourceId"].startswith("MedicationRequest/") for a in deletes
        )
        assert set(card["extension"]) == {"org.trialmatcher"}  # namespaced, as the spec asks
        assert ext(card)["trialId"] in card["summary"]


def test_patient_view_extension_is_namespaced(client):
    cards = client.post("/cds-services/trial-matcher", json=hook_request("demo-amara")).json()["cards"]
    assert cards and all(set(c["extension"]) == {"org.trialmatcher"} and ext(c)["status"] for c in cards)


def test_accepted_feedback_needs_the_accepted_suggestions(client):
    item = {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:00:00Z"}
    r = client.post("/cds-services/trial-matcher/feedback", json={"feedback": [item]})
    assert r.status_code == 400 and "acceptedSuggestions" in r.text
    item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
    assert client.post("/cds-services/trial-matcher/feedback", json={"feedback": [item]}).status_code == 200


def test_prefetch_keys_not_asked_for_and_data_not_read_are_named(client):
    req = hook_request("demo-amara", "partial")
    req["prefetch"]["allergies"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    card = client.post("/cds-services/trial-matcher", json=req).json()["cards"][0]
    assert "prefetch key(s) this service does not ask for were ignored: allergies" in plain(card["detail"])
    assert "results (Observation) was not prefetched, and no FHIR server was given" in plain(card["detail"])
