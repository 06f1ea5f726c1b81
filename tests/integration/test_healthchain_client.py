"""An independent CDS Hooks client, HealthChain 0.16 (PyPI), plays the EHR against the service (auth off).

HealthChain runs in its own virtual environment (.venv-healthchain, made by scripts/fhir-servers.sh: its
pins clash with ours), driven by healthchain_driver.py against the service as a real process on
loopback. Where HealthChain follows CDS Hooks 2.0 its models must accept every answer; where it does
not, the deviation is listed here with the spec clause, and the answer is checked against our own
reading of the field rules (tests/cds_spec.py) instead. HealthChain cannot send a JWT, so the
service runs with client authentication off.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cds_spec import discovery_problems, response_problems
from helpers import draft_order, ext

from bench.service import ServiceProcess
from demo.hook_request import hook_request
from demo.load import demo_bundles

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-healthchain" / "bin" / "python"

# Where HealthChain 0.16.1 is stricter than CDS Hooks 2.0 (https://cds-hooks.org/specification/current/).
# Each is (field, pydantic error type) as its response models report it.
HEALTHCHAIN_DEVIATIONS = {
    # Link.autoLaunchable: "OPTIONAL ... boolean" in the spec; HealthChain's Link requires it
    ("autoLaunchable", "missing"),
    # Suggestion.isRecommended: "OPTIONAL ... boolean" in the spec; HealthChain's Suggestion requires it
    ("isRecommended", "missing"),
}


@pytest.fixture(scope="module")
def driven(tmp_path_factory) -> dict:
    if not PYTHON.exists():
        pytest.fail("HealthChain is not installed: run scripts/test.sh (scripts/fhir-servers.sh installs it)")
    work = tmp_path_factory.mktemp("healthchain")
    svc = ServiceProcess(work)
    try:
        cases = {"base": svc.url, "cases": _cases()}
        (work / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
        run = subprocess.run(
            [str(PYTHON), str(Path(__file__).with_name("healthchain_driver.py")), str(work / "cases.json"),
             str(work / "out.json")],
            cwd=ROOT, timeout=600, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads((work / "out.json").read_text(encoding="utf-8"))
    finally:
        svc.stop()


def _cases() -> list[dict]:
    cases = []
    for pid in demo_bundles():
        req = hook_request(pid, "full")
        cases.append({"name": pid, "service": "trial-matcher", "hook": "patient-view", **_parts(req)})
    draft = draft_order("riTUXimab 10 MG/ML Injection", "demo-amara")
    for hook, service in (("order-select", "trial-order-select"), ("order-sign", "trial-order-sign")):
        req = hook_request("demo-amara", "full")
        req["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
        if hook == "order-select":
            req["context"]["selections"] = ["MedicationRequest/draft-1"]
        cases.append({"name": f"{hook} rituximab", "service": service, "hook": hook, **_parts(req)})
    return cases


def _parts(req: dict) -> dict:
    return {"context": req["context"], "prefetch": req["prefetch"]}


def test_discovery_validates_in_healthchain_and_by_the_spec(driven):
    d = driven["discovery"]
    assert d["status"] == 200 and d["healthchain_errors"] == []
    assert discovery_problems(d["body"]) == []


def test_every_answer_of_every_hook_follows_the_spec_and_healthchain_where_it_does(driven):
    hooks = driven["hooks"]
    assert {h["hook"] for h in hooks} == {"patient-view", "order-select", "order-sign"}
    for h in hooks:
        assert h["status"] == 200, h["name"]
        assert response_problems(h["body"]) == [], h["name"]
        found = {tuple(e) for e in h["healthchain_errors"]}
        assert found <= HEALTHCHAIN_DEVIATIONS, (h["name"], found)
    assert sum(len(h["body"]["cards"]) for h in hooks if h["hook"] == "patient-view") > 0
    # HealthChain's own client sent every patient-view and got the same number of cards
    for h in hooks:
        if h["hook"] == "patient-view":
            assert h["sandbox_client_cards"] == len(h["body"]["cards"]), h["name"]


def test_order_hooks_warn_with_one_delete_action_per_order(driven):
    for h in driven["hooks"]:
        if h["hook"] == "patient-view":
            continue
        # HealthChain's CDSRequest drops these from the context it serialises (CDS Hooks 2.0 order-select and
        # order-sign: draftOrders REQUIRED, selections REQUIRED for order-select); the driver puts them back,
        # so the order is seen. (HealthChain's order contexts also invent a random encounterId when the EHR
        # gives none; the hooks' encounterId is OPTIONAL and the service does not read it.)
        assert "draftOrders" in h["context_dropped_by_healthchain"]
        assert set(h["context_dropped_by_healthchain"]) <= {"selections", "draftOrders", "encounterId"}
        cards = h["body"]["cards"]
        assert cards, h["name"]
        for card in cards:
            deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
            assert deletes and all(a["resourceId"] == "MedicationRequest/draft-1" for a in deletes)
            assert ext(card)["trialId"] in card["summary"]


def test_feedback_from_healthchain(driven):
    by_outcome = {f["outcome"]: f for f in driven["feedback"]}
    assert by_outcome["overridden"]["status"] == 200
    # HealthChain's CDSFeedback names the field `acceptedSuggestion`; CDS Hooks 2.0 Feedback requires
    # `acceptedSuggestions` for outcome "accepted", so the service refuses it
    assert "acceptedSuggestion" in by_outcome["accepted"]["sent"]["feedback"][0]
    assert by_outcome["accepted"]["status"] == 400


def test_healthchains_synthetic_requests_are_answered_and_their_own_prefetch_keys_named(driven):
    """HealthChain's generator sends prefetch keys of its own (CDS Hooks: the client fills the keys that
    discovery names) and a Patient whose id is not context.patientId. The service never answers 5xx: it
    names the keys it ignored and the resource it set aside, and with no patient data left answers 412."""
    syn = driven["synthetic"]
    unasked = set(syn["prefetch_keys"]) - set(hook_request("demo-amara", "full")["prefetch"])
    assert syn["statuses"] and unasked
    for status, body in zip(syn["statuses"], syn["bodies"], strict=True):
        assert status in (200, 412)
        text = json.dumps(body)
        assert "prefetch key(s) this service does not ask for were ignored" in text
        assert all(k in text for k in unasked)
        if status == 200:
            assert response_problems(body) == []
        else:
            assert any("not clearly about this patient" in r for r in body["reasons"])
