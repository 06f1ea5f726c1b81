"""Order hooks: draft orders that would close a trial get a warning card; others get nothing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from helpers import ext, open_service, plain, rules_mention, seed_only

from demo import synthetic as syn
from demo.hook_request import prefetch_for

AS_OF = date(2026, 11, 23)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with open_service(tmp_path_factory.mktemp("orders"), as_of=AS_OF) as c:
        yield c


def med_order(system: str, code: str, display: str, oid: str = "draft-1", dose_mg: float | None = None) -> dict:
    res = {
        "resourceType": "MedicationRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {
            "coding": [{"system": system, "code": code, "display": display}],
            "text": display,
        },
    }
    if dose_mg is not None:
        res["dosageInstruction"] = [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": dose_mg,
                            "unit": "mg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mg",
                        }
                    }
                ],
            }
        ]
    return res


def call(client, hook: str, orders: list[dict], patient: list[dict] | None = None, selections=None, prefetch=True):
    patient = patient or syn.eligible_patient(AS_OF)
    ctx = {
        "patientId": "p1",
        "userId": "Practitioner/1",
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]},
    }
    if selections is not None:
        ctx["selections"] = selections
    req = {"hook": hook, "hookInstance": "0f9a7f5e-0000-4000-8000-000000000001", "context": ctx}
    if prefetch:
        req["prefetch"] = prefetch_for(patient, "p1")
    service = "trial-order-sign" if hook == "order-sign" else "trial-order-select"
    r = client.post(f"/cds-services/{service}", json=req)
    assert r.status_code == 200, r.text[:300]
    return r.json()["cards"]


def by_trial(cards):
    return {ext(c)["trialId"]: c for c in cards}


def test_rituximab_closes_three_trials_until_their_washouts_end(client):
    cards = by_trial(call(client, "order-sign", [med_order(RXNORM, "121191", "riTUXimab 10 MG/ML Injectable")]))
    assert seed_only(cards) == {"NCT06902844", "NCT07274059", "NCT06010472"}
    assert ext(cards["NCT06902844"])["eligibleFrom"] == "2027-01-24"  # 2 months + the day it clears
    assert ext(cards["NCT07274059"])["eligibleFrom"] == str(AS_OF + timedelta(weeks=4, days=1))
    assert ext(cards["NCT06010472"])["eligibleFrom"] == "2026-12-24"
    c = cards["NCT06902844"]
    assert c["indicator"] == "warning" and "until 2027-01-24" in c["summary"] and len(c["summary"]) < 140
    assert "exc-7.3" in plain(c["detail"]) and "biologic therapies" in plain(c["detail"])
    assert c["selectionBehavior"] == "at-most-one" and len(c["overrideReasons"]) == 3
    create, delete = c["suggestions"]
    assert create["actions"][0]["type"] == "create"
    assert create["actions"][0]["resource"]["resourceType"] == "ServiceRequest"
    assert create["actions"][0]["resource"]["subject"] == {"reference": "Patient/p1"}
    assert delete["actions"][0] == {
        "type": "delete",
        "description": "Remove the draft order",
        "resourceId": "MedicationRequest/draft-1",
    }


def test_belimumab_by_clinical_drug_name(client):
    cards = by_trial(call(client, "order-sign", [med_order(RXNORM, "9999999", "belimumab 120 MG/ML Injectable")]))
    assert seed_only(cards) == {"NCT06902844", "NCT07274059", "NCT06010472"}


@pytest.mark.parametrize(
    ("brand", "generic"),
    [
        ("BENLYSTA 200 MG/ML SC SOAJ", "belimumab 200 MG/ML Auto-Injector"),
        ("RITUXAN 10 MG/ML IV SOLN", "rituximab 10 MG/ML Injectable"),
        ("Saphnelo 300 mg/2 mL IV", "anifrolumab 300 mg/2 mL IV"),
        ("Olumiant 2 mg tablet", "baricitinib 2 mg tablet"),
    ],
)
def test_an_order_named_only_by_its_brand_closes_what_its_ingredient_does(client, brand, generic):
    """A draft order whose only name is the trade name (under a code the maps do not hold) warns as the
    generic order does: the same trials, until the same dates."""

    def closes(display: str) -> dict[str, str | None]:
        cards = by_trial(call(client, "order-sign", [med_order(RXNORM, "9999999", display)]))
        return {trial: ext(card).get("eligibleFrom") for trial, card in cards.items()}

    generic_closes = closes(generic)
    assert generic_closes, "the ingredient closes no trial: the comparison would say nothing"
    assert closes(brand) == generic_closes


def test_mrna_vaccine_closes_the_in_vivo_car_t_trial_for_two_years(client):
    cards = by_trial(call(client, "order-sign", [med_order(CVX, "208", "COVID-19 mRNA vaccine")]))
    assert seed_only(cards) == {"NCT06801119"}
    assert all(rules_mention(client.app.state.catalog, t, "mrna_lnp") for t in cards)
    assert ext(cards["NCT06801119"])["eligibleFrom"] == "2028-11-24"


def test_live_vaccine_as_immunization_style_order(client):
    imm = {
        "resourceType": "Immunization",
        "id": "imm-draft",
        "status": "not-done",
        "vaccineCode": {"coding": [{"system": CVX, "code": "03", "display": "MMR"}]},
        "patient": {"reference": "Patient/p1"},
        "occurrenceDateTime": str(AS_OF),
    }
    cards = by_trial(call(client, "order-sign", [imm]))
    assert seed_only(cards) == {"NCT06801119"} and ext(cards["NCT06801119"])["eligibleFrom"] == "2026-12-24"
    assert all(rules_mention(client.app.state.catalog, t, "live_vaccines") for t in cards)


def test_drug_in_no_washout_class_gives_no_card(client):
    assert call(client, "order-sign", [med_order(RXNORM, "197361", "amLODIPine 5 MG Oral Tablet")]) == []


def test_patient_already_ineligible_gets_no_card(client):
    ineligible = [
        *syn.eligible_patient(AS_OF, birth="1930-01-01"),
        syn.condition("p1", icd="B20", display="HIV disease"),
    ]
    assert call(client, "order-sign", [med_order(RXNORM, "121191", "riTUXimab")], ineligible) == []


def test_cell_therapy_is_a_permanent_bar(client):
    cards = by_trial(call(client, "order-sign", [med_order(RXNORM, "0", "tisagenlecleucel suspension")]))
    c = cards["NCT06902844"]
    assert "permanently" in c["summary"] and ext(c)["orderImpact"] == "permanent"
    assert "eligibleFrom" not in ext(c)


def test_steroid_dose_above_the_bar_quotes_the_trials_alternatives(client):
    cards = by_trial(call(client, "order-sign", [med_order(RXNORM, "6902", "methylPREDNISolone 32 MG", dose_mg=32)]))
    c = cards["NCT06902844"]
    assert "exc-7.1" in plain(c["detail"]) and "inhaled corticosteroids are permitted" in plain(c["detail"])
    low = call(client, "order-sign", [med_order(RXNORM, "6902", "methylPREDNISolone 4 MG", dose_mg=4)])
    assert "NCT06902844" not in by_trial(low)


def test_order_select_checks_only_the_selection_and_stays_silent_without_prefetch(client):
    orders = [med_order(RXNORM, "197361", "amLODIPine", "d-1"), med_order(RXNORM, "121191", "riTUXimab", "d-2")]
    assert call(client, "order-select", orders, selections=["MedicationRequest/d-1"]) == []
    selected = by_trial(call(client, "order-select", orders, selections=["MedicationRequest/d-2"]))
    # the selection alone is checked: exactly the cards rituximab alone gets, whatever trials the catalogue holds
    assert selected.keys() == by_trial(call(client, "order-sign", [orders[1]])).keys()
    assert seed_only(selected) == {"NCT06902844", "NCT07274059", "NCT06010472"}
    assert call(client, "order-select", orders, selections=["MedicationRequest/d-2"], prefetch=False) == []
    # no selections (the hook requires them; an EHR may still leave them out): every draft is checked, as
    # nothing says which is new, so the rituximab draft is not passed over in silence
    for none in (None, []):
        assert by_trial(call(client, "order-select", orders, selections=none)).keys() == selected.keys()


def test_order_hooks_validate_their_context(client):
    bad = {
        "hook": "order-sign",
        "hookInstance": "0f9a7f5e-0000-4000-8000-000000000002",
        "context": {"patientId": "p1", "draftOrders": {"resourceType": "Patient"}},
    }
    assert client.post("/cds-services/trial-order-sign", json=bad).status_code == 400
    wrong_hook = {**bad, "hook": "patient-view"}
    assert client.post("/cds-services/trial-order-sign", json=wrong_hook).status_code == 400


def test_discovery_lists_all_three_services(client):
    services = {s["id"]: s["hook"] for s in client.get("/cds-services").json()["services"]}
    assert services == {
        "trial-matcher": "patient-view",
        "trial-order-select": "order-select",
        "trial-order-sign": "order-sign",
    }


def test_order_feedback_goes_to_the_same_store(client):
    body = {
        "feedback": [
            {
                "card": "c-order",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
                "overrideReason": {
                    "reason": {
                        "system": "https://trial-matcher.org/fhir/CodeSystem/order-check",
                        "code": "clinically-urgent",
                    }
                },
            }
        ]
    }
    assert client.post("/cds-services/trial-order-sign/feedback", json=body).json() == {"stored": 1}


def test_no_warning_when_the_bar_the_order_adds_lifts_before_the_existing_one(client):
    """A 17-year-old whose 18th birthday is 11 months away: a washout that ends sooner changes nothing."""
    birthday = AS_OF + timedelta(days=335)
    minor = syn.eligible_patient(AS_OF, birth=birthday.replace(year=birthday.year - 18).isoformat())
    ritux = [med_order(RXNORM, "121191", "riTUXimab 10 MG/ML Injectable")]
    adult_cards = by_trial(call(client, "order-sign", ritux))
    assert adult_cards  # the same order warns an adult
    minor_cards = by_trial(call(client, "order-sign", ritux, minor))
    for tid, card in adult_cards.items():
        resumes = ext(card).get("eligibleFrom")
        if resumes is not None and date.fromisoformat(resumes) <= birthday:
            assert tid not in minor_cards  # the washout ends before the birthday: no warning
    for card in minor_cards.values():  # what still warns moves the date past the birthday, or for good
        assert ext(card).get("eligibleFrom") is None or date.fromisoformat(ext(card)["eligibleFrom"]) > birthday
    assert set(minor_cards) < set(adult_cards)


def test_no_warning_outside_the_cohort(client):
    no_sle = [r for r in syn.eligible_patient(AS_OF) if r["resourceType"] != "Condition"]
    no_sle.append(syn.condition("p1", icd="M06.9", display="Rheumatoid arthritis"))
    assert call(client, "order-sign", [med_order(RXNORM, "121191", "riTUXimab")], no_sle) == []


def test_order_select_talks_about_ordering_and_order_sign_about_signing(client):
    ritux = [med_order(RXNORM, "121191", "riTUXimab")]
    selected = call(client, "order-select", ritux, selections=["MedicationRequest/draft-1"])
    signed = call(client, "order-sign", ritux)
    assert selected and signed
    assert all("Ordering" in c["detail"] and "Signing" not in c["detail"] for c in selected)
    assert all("Signing" in c["detail"] for c in signed)
