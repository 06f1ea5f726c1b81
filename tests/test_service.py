"""The HTTP layer without a FHIR server: validation, 404/412, prefetch-only hooks, REST, ResearchStudy."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.researchstudy import ResearchStudy
from helpers import ext, seed_only

from cds_service.api.app import create_app
from cds_service.settings import Settings
from demo.hook_request import hook_request

TRIAL_FILES = sorted(p.stem for p in Settings().trials_dir.glob("*.yaml"))  # the configured catalogue


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("svc") / "fb.sqlite3"
    with TestClient(
        create_app(Settings(database_url=f"sqlite:///{db}", log_level="WARNING", auth_required=False))
    ) as c:
        yield c


def base_request(**over) -> dict:
    req = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"}}
    req.update(over)
    return req


def test_discovery_prefetch_keys(client):
    svc = client.get("/cds-services").json()["services"][0]
    assert svc["id"] == "trial-matcher" and svc["hook"] == "patient-view"
    assert svc["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert svc["prefetch"]["observations"].startswith("Observation?patient={{context.patientId}}")


def test_discovery_usage_names_every_resource_type_the_service_reads(client):
    """An integrator grants read scopes from usageRequirements: every type a prefetch template asks for (and the
    Medication resources they include) is named, or the service would read less than its criteria need."""
    for svc in client.get("/cds-services").json()["services"]:
        if "read token for" not in svc["usageRequirements"]:
            continue  # order-select: prefetch, completed within its budget
        asked = {t.split("?")[0].split("/")[0] for t in svc["prefetch"].values()}
        named = set(svc["usageRequirements"].rstrip(".").split("read token for ")[1].replace(" and ", ", ").split(", "))
        assert asked <= named and "Medication" in named, (asked - named, svc["usageRequirements"])


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (base_request(hook="order-sign"), 400, "patient-view"),
        (base_request(context={}), 400, "patientId"),
        (base_request(hookInstance="not-a-uuid"), 400, "hookInstance"),
        (
            base_request(fhirAuthorization={"access_token": "secret-token-value", "token_type": "Bearer"}),
            400,
            "fhirServer",
        ),
        (base_request(fhirServer="ftp://x"), 400, "fhirServer"),
        ({"hook": "patient-view"}, 400, "hookInstance"),
    ],
)
def test_bad_requests_are_400_and_never_echo_input(client, body, status, fragment):
    r = client.post("/cds-services/trial-matcher", json=body)
    assert r.status_code == status and fragment in r.text
    assert "secret-token-value" not in r.text


def test_malformed_json_is_400(client):
    r = client.post("/cds-services/trial-matcher", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_unknown_service_is_404(client):
    assert client.post("/cds-services/nope", json=base_request()).status_code == 404
    assert client.post("/cds-services/nope/feedback", json={"feedback": []}).status_code in (400, 404)


def test_no_prefetch_and_no_server_is_412(client):
    r = client.post("/cds-services/trial-matcher", json=base_request())
    assert r.status_code == 412 and r.json()["reasons"]


def open_trials(client, bundle: dict) -> set[str]:
    """The trials /match finds likely or possibly eligible: what the cards must show, whatever the catalogue."""
    trials = client.post("/match", json=bundle).json()["trials"]
    return {t["id"] for t in trials if t["status"] in ("likely-eligible", "possibly-eligible")}


def test_full_prefetch_without_server(client):
    from demo.load import demo_bundles

    r = client.post("/cds-services/trial-matcher", json=hook_request("demo-dana"))
    assert r.status_code == 200
    cards = {ext(c)["trialId"] for c in r.json()["cards"]}
    assert cards == open_trials(client, demo_bundles()["demo-dana"])
    assert seed_only(cards) == {"NCT06010472", "NCT06676631"}


def test_nothing_fits_gives_empty_cards(client):
    from demo.load import demo_bundles

    req = hook_request("demo-dana")
    req["prefetch"]["patient"] = {**req["prefetch"]["patient"], "birthDate": "1930-01-01"}
    body = client.post("/cds-services/trial-matcher", json=req).json()
    bundle = demo_bundles()["demo-dana"]
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"] = {**e["resource"], "birthDate": "1930-01-01"}
    expected = open_trials(client, bundle)
    assert not seed_only(expected) and {ext(c)["trialId"] for c in body["cards"]} == expected
    if not expected:  # the seed catalogue: nothing fits, so the answer is exactly no cards
        assert body == {"cards": []}


def test_match_with_bundle_reports_every_criterion(client):
    from demo.load import demo_bundles

    report = client.post("/match", json=demo_bundles()["demo-bruno"], params={"trial": "NCT06902844"}).json()
    assert report["patient"] == "Patient/demo-bruno" and len(report["trials"]) == 1
    t = report["trials"][0]
    assert t["status"] == "possibly-eligible" and t["eligible_from"]
    assert len(t["criteria"]) == 35
    washout = next(c for c in t["criteria"] if c["id"] == "exc-7.3")
    assert washout["outcome"] == "fail" and washout["until"] == t["eligible_from"]
    assert washout["evidence"][0]["resource"].startswith("MedicationRequest/")


def test_match_refuses_two_patients_in_one_bundle(client):
    from demo.load import demo_bundles

    b = demo_bundles()
    mixed = {**b["demo-amara"], "entry": b["demo-amara"]["entry"] + b["demo-dana"]["entry"]}
    r = client.post("/match", json=mixed)
    assert r.status_code == 400 and "2 different Patient" in r.json()["error"]


def test_match_rejects_non_bundles(client):
    assert client.post("/match", json={"resourceType": "Patient"}).status_code == 400
    assert client.post("/match", params={"patient": "p1"}).status_code == 400  # no FHIR server configured
    assert client.post("/match", json={"resourceType": "Bundle"}, params={"trial": "NCT0"}).status_code == 404


def test_trials_endpoints(client):
    trials = client.get("/trials").json()
    assert len(trials) == len(client.app.state.catalog.trials) and all(
        t["criteria"] == t["computable"] + t["review"] for t in trials
    )
    one = client.get("/trials/NCT06801119").json()
    assert one["criteria"][0]["text"] and client.get("/trials/NCT0").status_code == 404


@pytest.mark.parametrize("trial_id", TRIAL_FILES)
def test_research_study_is_valid_fhir_r4(client, trial_id):
    r = client.get(f"/trials/{trial_id}/ResearchStudy")
    assert r.headers["content-type"].startswith("application/fhir+json")
    study = ResearchStudy.model_validate(r.json())
    group = study.contained[0]
    assert study.enrollment[0].reference == "#enrollment"
    trial = client.get(f"/trials/{trial_id}").json()
    assert len(group.characteristic) == len(trial["criteria"])
    assert sum(ch.exclude for ch in group.characteristic) == sum(c["type"] == "exclusion" for c in trial["criteria"])


def test_feedback_validation(client):
    assert client.post("/cds-services/trial-matcher/feedback", json={"feedback": []}).status_code == 400
    bad = {"feedback": [{"card": "x", "outcome": "maybe", "outcomeTimestamp": "2026-01-01"}]}
    assert client.post("/cds-services/trial-matcher/feedback", json=bad).status_code == 400


def test_admin_disabled_without_token(client):
    assert client.get("/admin/feedback").status_code == 404


def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["trials"] == len(TRIAL_FILES)
