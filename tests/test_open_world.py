"""Open world per source, through the HTTP service: what is on record counts whatever else was not read.

The CDS Hooks examples prefetch four keys (Patient, Condition, Observation, MedicationStatement). With
those alone the cards must still act on what the MedicationStatements show, agree with /match, and the
order hooks must still warn. Expectations are derived from the catalogue and /match, never listed.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import date, timedelta

import pytest
from helpers import CLASSIC_KEYS, OPTIONAL_KEYS, draft_order, ext, open_service, plain

from demo import synthetic as syn
from demo.hook_request import prefetch_for
from demo.load import demo_bundles, resources

AS_OF = date(2026, 11, 23)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with open_service(tmp_path_factory.mktemp("ow"), as_of=AS_OF) as c:
        yield c


def hook(client, res: list[dict], pid: str, keys: tuple[str, ...]) -> list[dict]:
    req = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": pid},
        "prefetch": prefetch_for(res, pid, keys),
    }
    r = client.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200, r.text[:300]
    return r.json()["cards"]


def match(client, res: list[dict]) -> dict:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in res]}
    r = client.post("/match", json=bundle, params={"as_of": AS_OF.isoformat()})
    assert r.status_code == 200, r.text[:300]
    return r.json()


def sent(res: list[dict], pid: str, keys: tuple[str, ...]) -> list[dict]:
    """Exactly the resources the prefetch carries, for /match."""
    out = []
    for v in prefetch_for(res, pid, keys).values():
        if v is None:
            continue
        out.extend([e["resource"] for e in v["entry"]] if v["resourceType"] == "Bundle" else [v])
    return out


def patient_with_drugs() -> list[dict]:
    d = lambda n: AS_OF - timedelta(days=n)  # noqa: E731
    res = [r for r in syn.eligible_patient(AS_OF) if "8640" not in str(r.get("medicationCodeableConcept"))]
    res.append(syn.med_statement("p1", "8640", "predniSONE 40 MG", d(30), dose_mg=40))
    res.append(syn.med_statement("p1", "121191", "riTUXimab", d(60), d(21), status="completed"))
    return res


def test_medication_statements_decide_with_the_four_classic_keys(client):
    res = patient_with_drugs()
    report = match(client, sent(res, "p1", CLASSIC_KEYS))
    cards = {ext(c)["trialId"]: c for c in hook(client, res, "p1", CLASSIC_KEYS)}
    decided = [
        c
        for t in report["trials"]
        for c in t["criteria"]
        if any("riTUXimab" in e["label"] or "predniSONE" in e["label"] for e in c.get("evidence", []))
    ]
    assert decided, "the MedicationStatements must be evidence somewhere"
    assert not any("not read" in m and c["outcome"] == "unknown" for c in decided for m in c.get("missing", []))
    # rituximab 3 weeks ago is a temporary bar in every trial that has a biologic washout: dated cards
    barred = [t for t in report["trials"] if t["status"] == "possibly-eligible" and t.get("eligible_from")]
    assert barred and all(ext(cards[t["id"]])["eligibleFrom"] == t["eligible_from"] for t in barred)


def test_none_on_record_names_the_source_not_read(client):
    res = [r for r in syn.eligible_patient(AS_OF) if r["resourceType"] != "MedicationStatement"]
    report = match(client, sent(res, "p1", CLASSIC_KEYS))
    assert report  # /match treats a Bundle as the whole record; the hook does not:
    cards = hook(client, res, "p1", CLASSIC_KEYS)
    assert cards and all("medication orders (MedicationRequest)" in plain(c["detail"]) for c in cards)


SUBSETS = [
    CLASSIC_KEYS,
    *[
        (*CLASSIC_KEYS, *extra)
        for n in (1, 3, len(OPTIONAL_KEYS))
        for extra in itertools.combinations(OPTIONAL_KEYS, n)
    ],
]


@pytest.mark.parametrize("patient", sorted(demo_bundles(AS_OF)))
@pytest.mark.parametrize("keys", SUBSETS, ids=["+".join(k[4:]) or "classic" for k in SUBSETS])
def test_cards_agree_with_match_for_any_subset_of_keys(client, patient, keys):
    res = resources(demo_bundles(AS_OF)[patient])
    cards = {ext(c)["trialId"]: ext(c) for c in hook(client, res, patient, keys)}
    carded = {t: e["status"] for t, e in cards.items()}
    report = match(client, sent(res, patient, keys))
    shown = {t["id"]: t for t in report["trials"] if t["status"] != "ineligible"}
    assert set(carded) == set(shown)
    for tid, e in cards.items():
        # a temporary bar comes from what is on record, which both see: the same date
        assert e.get("eligibleFrom") == shown[tid].get("eligible_from"), tid
        # /match reads a Bundle as the whole record, so it can only be surer than a partial prefetch
        assert not (e["status"] == "likely-eligible" and shown[tid]["status"] != "likely-eligible"), tid
    if set(keys) == {*CLASSIC_KEYS, *OPTIONAL_KEYS}:  # everything sent: the statuses agree too
        assert carded == {t["id"]: t["status"] for t in report["trials"] if t["status"] != "ineligible"}


def test_order_hooks_warn_on_medication_statement_only_data(client):
    req = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "patientId": "p1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {
                        "resource": draft_order("riTUXimab 10 MG/ML Injectable"),
                    }
                ],
            },
        },
        "prefetch": prefetch_for(syn.eligible_patient(AS_OF), "p1", CLASSIC_KEYS),
    }
    cards = client.post("/cds-services/trial-order-sign", json=req).json()["cards"]
    assert cards and all(c["indicator"] == "warning" for c in cards)


def test_deceased_patient_gets_no_cards_and_match_says_why(client):
    res = [
        {**r, "deceasedDateTime": "2017-04-02"} if r["resourceType"] == "Patient" else r
        for r in syn.eligible_patient(AS_OF)
    ]
    assert hook(client, res, "p1", (*CLASSIC_KEYS, *OPTIONAL_KEYS)) == []
    report = match(client, res)
    assert all(t["status"] == "ineligible" and "deceased" in " ".join(t["notes"]) for t in report["trials"])


def test_horizon_is_configurable(tmp_path):
    """TRIAL_MATCHER_TEMPORARY_HORIZON_DAYS: a 16-year-old is possibly eligible from her 18th birthday only
    when the horizon reaches it."""
    teen = [
        {**r, "birthDate": str(AS_OF.replace(year=AS_OF.year - 17) + timedelta(days=200))}
        if r["resourceType"] == "Patient"
        else r
        for r in syn.eligible_patient(AS_OF)
    ]
    statuses = {}
    for days in (365, 3650):
        with open_service(tmp_path, f"h{days}", as_of=AS_OF, temporary_horizon_days=days) as c:
            statuses[days] = {t["id"]: t["status"] for t in match(c, teen)["trials"]}
    changed = {t for t in statuses[365] if statuses[365][t] != statuses[3650][t]}
    assert changed  # the seed trials all start at 18
    assert all(statuses[365][t] == "ineligible" and statuses[3650][t] == "possibly-eligible" for t in changed)


def test_trial_notes_are_on_the_card(client):
    """A trial whose source lacks part of its criteria says so on every card (audit TEXT-1)."""
    cards = {ext(c)["trialId"]: c for c in hook(client, syn.eligible_patient(AS_OF), "p1", CLASSIC_KEYS)}
    trials = client.get("/trials").json()
    noted = [t["id"] for t in trials if client.get(f"/trials/{t['id']}").json().get("notes")]
    assert noted, "a seed trial carries a source note"
    for tid in noted:
        if tid in cards:
            for note in client.get(f"/trials/{tid}").json()["notes"]:
                assert note[:40] in plain(cards[tid]["detail"])
