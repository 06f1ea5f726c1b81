"""Checklist pages behind the cards: content, privacy headers, expiry, forgery, escaping."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from helpers import ext

from cds_service.api.app import create_app
from cds_service.settings import Settings
from cds_service.views import checklists
from demo.hook_request import hook_request


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("cl") / "db.sqlite3"
    settings = Settings(
        database_url=f"sqlite:///{db}",
        auth_required=False,
        log_level="WARNING",
        checklist_ttl_seconds=600,
        trusted_hosts="testserver",  # the TestClient's Host
    )
    with TestClient(create_app(settings)) as c:
        yield c


def cards(client, patient: str, mutate=None) -> list[dict]:
    req = hook_request(patient)
    if mutate:
        mutate(req)
    r = client.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200
    return r.json()["cards"]


def checklist_url(card: dict) -> str:
    link = next(lk for lk in card["links"] if "checklist" in lk["label"].lower())
    assert link["type"] == "absolute"
    return link["url"]


def test_every_card_links_to_its_checklist_without_patient_data_in_the_url(client):
    for card in cards(client, "demo-bruno"):
        url = checklist_url(card)
        path = urlsplit(url).path
        assert path.startswith("/checklist/") and len(path.split("/")[-1]) >= 40
        assert "demo-bruno" not in url and "bruno" not in url.lower()


def test_checklist_page_shows_trial_criteria_evidence_missing_and_review(client):
    card = next(c for c in cards(client, "demo-bruno") if ext(c)["trialId"] == "NCT06902844")
    r = client.get(urlsplit(checklist_url(card)).path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert (
        "script-src" not in r.headers["content-security-policy"]
        and "default-src 'none'" in r.headers["content-security-policy"]
    )
    html = r.text
    for expected in (
        "Equecabtagene Autoleucel",
        "Tongji Hospital",
        "Wuhan",
        "https://clinicaltrials.gov/study/NCT06902844",
        "Possibly eligible",
        "inc-2.1",
        "exc-7.3",
        "Not met",
        "Needs review",
        "Data missing",
        "riTUXimab",
        "MedicationRequest/",
        "(reported",
        "Inclusion criteria",
        "Exclusion criteria",
    ):
        assert expected in html, expected
    assert '<html lang="en">' in html and '<th scope="row">' in html and 'href="#main"' in html


def test_possibly_eligible_checklist_lists_the_missing_data(client):
    card = next(c for c in cards(client, "demo-eli") if ext(c)["trialId"] == "NCT06010472")
    html = client.get(urlsplit(checklist_url(card)).path).text
    assert "Left ventricular ejection fraction" in html and "no result in the last" in html


def test_forged_and_unknown_tokens_get_404(client):
    for token in ("x" * 43, "definitely-not-a-token-but-long-enough", "short"):
        r = client.get(f"/checklist/{token}")
        assert r.status_code == 404 and "not valid" in r.text and r.headers["cache-control"] == "no-store"


def test_expired_token_gets_410(client):
    card = cards(client, "demo-amara")[0]
    path = urlsplit(checklist_url(card)).path
    assert client.get(path).status_code == 200
    store = client.app.state.store
    digest = checklists.token_hash(path.rsplit("/", 1)[1])
    store._conn.execute("UPDATE checklist SET expires_at = ? WHERE token_hash = ?", (time.time() - 1, digest))
    r = client.get(path)
    assert r.status_code == 410 and "expired" in r.text


def test_patient_supplied_text_is_escaped(client):
    def inject(req):
        entries = req["prefetch"]["conditions"]["entry"]
        entries[0]["resource"]["code"]["text"] = "<script>alert('x')</script>SLE"

    card = cards(client, "demo-amara", inject)[0]
    html = client.get(urlsplit(checklist_url(card)).path).text
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_static_stylesheet(client):
    r = client.get("/static/checklist.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css") and "@media print" in r.text


def test_smart_link_option(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/db.sqlite3",
        auth_required=False,
        log_level="WARNING",
        checklist_link_type="smart",
        smart_launch_url="https://apps.example.org/checklist/launch",
    )
    with TestClient(create_app(settings)) as c:
        card = c.post("/cds-services/trial-matcher", json=hook_request("demo-amara")).json()["cards"][0]
    link = card["links"][0]
    assert link["type"] == "smart" and link["url"] == "https://apps.example.org/checklist/launch"
    import json

    assert len(json.loads(link["appContext"])["checklist"]) >= 40
