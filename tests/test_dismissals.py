"""Dismissed means dismissed: overridden feedback with a reason keeps that trial's card off that patient's
chart for TRIAL_MATCHER_OVERRIDE_DAYS, across workers and instances sharing the store; other trials and
other patients are not affected, and /match still shows the trial, marked as dismissed."""

from __future__ import annotations

import uuid
from datetime import date

from helpers import ext, open_service

from demo import synthetic as syn
from demo.hook_request import prefetch_for

AS_OF = date(2026, 11, 23)


def hook(client, pid: str) -> list[dict]:
    res = syn.eligible_patient(AS_OF, pid=pid)
    req = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": pid},
        "prefetch": prefetch_for(res, pid),
    }
    r = client.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200, r.text[:300]
    return r.json()["cards"]


def override(client, card: dict, reason: str | None = "patient-declined") -> None:
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:00:00Z"}
    if reason:
        item["overrideReason"] = {"reason": {"system": card["overrideReasons"][0]["system"], "code": reason}}
    r = client.post("/cds-services/trial-matcher/feedback", json={"feedback": [item]})
    assert r.status_code == 200 and r.json() == {"stored": 1}


def match(client, pid: str) -> dict[str, dict]:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in syn.eligible_patient(AS_OF, pid=pid)],
    }
    r = client.post("/match", json=bundle, params={"as_of": AS_OF.isoformat()})
    assert r.status_code == 200
    return {t["id"]: t for t in r.json()["trials"]}


def test_cards_offer_override_reasons(tmp_path):
    with open_service(tmp_path, as_of=AS_OF) as c:
        cards = hook(c, "p1")
    assert cards and all(
        {r["code"] for r in card["overrideReasons"]} >= {"patient-declined", "already-screened"} for card in cards
    )


def test_an_override_on_one_instance_suppresses_the_card_on_another(tmp_path):
    with open_service(tmp_path, as_of=AS_OF) as a, open_service(tmp_path, as_of=AS_OF) as b:  # one store, two apps
        first = hook(a, "p1")
        assert len(first) >= 2
        dismissed = first[0]
        override(a, dismissed)
        again = {ext(c)["trialId"] for c in hook(b, "p1")}
        assert ext(dismissed)["trialId"] not in again
        assert again == {ext(c)["trialId"] for c in first[1:]}  # other trials' cards stay
        assert len(hook(b, "p2")) == len(first)  # another patient is not affected
        reported = match(b, "p1")[ext(dismissed)["trialId"]]
        assert reported["status"] == ext(dismissed)["status"]  # still reported, marked with the date
        assert reported["dismissed"]["on"] == date.today().isoformat()
        assert reported["dismissed"]["reason"] == "patient-declined"


def test_an_override_without_a_reason_or_an_accept_dismisses_nothing(tmp_path):
    with open_service(tmp_path, as_of=AS_OF) as c:
        first = hook(c, "p1")
        override(c, first[0], reason=None)
        assert len(hook(c, "p1")) == len(first)


def test_the_window_is_a_setting(tmp_path):
    with open_service(tmp_path, as_of=AS_OF, override_days=0) as c:
        first = hook(c, "p1")
        override(c, first[0])
        assert len(hook(c, "p1")) == len(first)  # 0 days: overrides are recorded, nothing is suppressed


def test_the_store_keeps_no_patient_id(tmp_path):
    import sqlite3

    with open_service(tmp_path, as_of=AS_OF) as c:
        override(c, hook(c, "patient-zz9")[0])
    dump = "\n".join(sqlite3.connect(tmp_path / "db.sqlite3").iterdump())
    assert "patient-zz9" not in dump
