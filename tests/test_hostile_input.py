"""Hostile input: URLs from requests and FHIR responses, other patients' data, malformed shapes, stored sizes.

The FHIR server here is a fault injector (a real loopback HTTP server answering crafted pages); every
host an attack tries to reach is a real listening socket that records what it gets, so "never
contacted" is shown by an empty record, not by a mock's absence of calls.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from helpers import details, ext

from cds_service.api.app import create_app
from cds_service.logs import JsonFormatter
from cds_service.settings import Settings
from demo.hook_request import hook_request
from tests.servers import RecordingServer

TOKEN = "ehr-token-5c1e0a"
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1985-04-02"}
# the trials' disease, so the patient is in their cohort and the cards show what could not be read
SLE = {
    "resourceType": "Condition",
    "id": "sle",
    "subject": {"reference": "Patient/p1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
}


def searchset(resources: list[dict], next_url: str | None = None) -> dict:
    b: dict = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


class HostileFhir:
    """A FHIR server at <url>/fhir whose Observation search pages link to `next_link`."""

    def __init__(self) -> None:
        self.next_link: str | None = None
        self.observation_status = 200
        self.server = RecordingServer(respond=self._answer)
        self.base = f"{self.server.url}/fhir"

    def _answer(self, path: str):
        if path.startswith("/fhir/Patient/p1"):
            return 200, PATIENT
        if path.startswith("/fhir/Observation"):
            if self.observation_status != 200:
                return self.observation_status, {"resourceType": "OperationOutcome"}
            return 200, searchset([], None if "page=2" in path else self.next_link)
        if path.startswith("/fhir/Condition"):
            return 200, searchset([SLE])
        if path.startswith("/fhir/"):
            return 200, searchset([])
        return None


@pytest.fixture
def fhir() -> Iterator[HostileFhir]:
    f = HostileFhir()
    yield f
    f.server.close()


@pytest.fixture
def targets() -> Iterator[list[RecordingServer]]:
    """Hosts an attacker wants the token sent to: another port on the same address, and 127.0.0.10."""
    servers = [RecordingServer(), RecordingServer(host="127.0.0.10")]
    yield servers
    for s in servers:
        s.close()


@contextmanager
def service_log(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the service's logger (it does not propagate to the root logger caplog listens on)."""
    logger = logging.getLogger("trial_matcher")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def written(caplog) -> str:
    """The log as it is written: each record through the service's own JSON formatter."""
    return "\n".join(JsonFormatter().format(r) for r in caplog.records)


def make_client(tmp_path, **over) -> TestClient:
    settings = Settings(
        **{
            "database_url": f"sqlite:///{tmp_path}/db.sqlite3",
            "auth_required": False,
            "log_level": "WARNING",
            "hook_budget_seconds": 5,
            **over,
        }
    )
    return TestClient(create_app(settings))


def hook(fhir_server: str | None, prefetch: dict | None = None, patient: str = "p1") -> dict:
    req: dict = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient}}
    if fhir_server:
        req["fhirServer"] = fhir_server
        req["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "scope": "patient/*.read"}
    if prefetch is not None:
        req["prefetch"] = prefetch
    return req


def attack_links(fhir: HostileFhir, targets: list[RecordingServer]) -> list[str]:
    same_host_other_port, other_address = targets
    return [
        f"{same_host_other_port.url}/fhir/Observation?page=2",  # string prefix of the base? no: other port
        f"{other_address.url}/fhir/Observation?page=2",  # 127.0.0.10 starts with 127.0.0.1
        f"http://127.0.0.1:{fhir.server.port}@127.0.0.10:{other_address.port}/fhir/Observation?page=2",  # userinfo
        f"{fhir.base}/../../x?page=2",  # dot segments leave the base path
        f"{fhir.base}/%2e%2e/x?page=2",
        "http://[::1",  # unparsable
    ]


# --- 1. continuation links -------------------------------------------------------------------------


def test_next_links_in_server_responses_never_leave_the_allowed_server(tmp_path, fhir, targets):
    with make_client(tmp_path, allowed_fhir_servers=fhir.base) as c:
        for link in attack_links(fhir, targets):
            fhir.next_link = link
            r = c.post("/cds-services/trial-matcher", json=hook(fhir.base))
            assert r.status_code == 200, link
            assert "results (Observation) could not be read" in details(r), link
        # the positive control: a next link on the same server, under the base, is followed with the token
        fhir.next_link = f"{fhir.base}/Observation?page=2"
        assert c.post("/cds-services/trial-matcher", json=hook(fhir.base)).status_code == 200
    assert all(t.requests == [] for t in targets)
    page2 = [s for s in fhir.server.requests if "page=2" in s.path]
    assert page2 and all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in page2)  # one per Observation search


def test_next_links_in_prefetch_never_leave_the_allowed_server(tmp_path, fhir, targets):
    with make_client(tmp_path, allowed_fhir_servers=fhir.base) as c:
        for link in attack_links(fhir, targets):
            prefetch = {"patient": PATIENT, "observations": searchset([], link)}
            r = c.post("/cds-services/trial-matcher", json=hook(fhir.base, prefetch))
            assert r.status_code == 200 and "only the first page" in details(r), link
    assert all(t.requests == [] for t in targets)
    assert not any("page=2" in s.path for s in fhir.server.requests)


# --- 2. the allow-list -----------------------------------------------------------------------------------


def test_default_allow_list_contacts_nothing(tmp_path, targets):
    server = targets[0]
    with make_client(tmp_path) as c:
        r = c.post("/cds-services/trial-matcher", json=hook(f"{server.url}/fhir"))
    assert r.status_code == 412 and "allow-list" in r.text
    assert server.requests == []


@pytest.mark.parametrize(
    "suffix", ["/fhir?x=/../admin", "/fhir#frag", "/fhir/../admin", "/fhir/./x", "/fhir/%2E%2E/admin"]
)
def test_fhir_server_with_query_fragment_or_dot_segments_is_400(tmp_path, fhir, suffix):
    with make_client(tmp_path, allowed_fhir_servers=fhir.server.url) as c:
        r = c.post("/cds-services/trial-matcher", json=hook(fhir.server.url + suffix))
    assert r.status_code == 400 and "fhirServer" in r.text
    assert fhir.server.requests == [] and TOKEN not in r.text


def test_fhir_server_with_userinfo_is_400(tmp_path, fhir):
    with make_client(tmp_path, allowed_fhir_servers="*") as c:
        r = c.post("/cds-services/trial-matcher", json=hook(f"http://u:p@127.0.0.1:{fhir.server.port}/fhir"))
    assert r.status_code == 400 and fhir.server.requests == []


def test_allow_list_entry_names_the_port(tmp_path, fhir):
    """An entry without a port means the scheme's default port, not every port on the host."""
    with make_client(tmp_path, allowed_fhir_servers="http://127.0.0.1") as c:
        r = c.post("/cds-services/trial-matcher", json=hook(fhir.base))
    assert r.status_code == 412 and fhir.server.requests == []


# --- 3. no oracle ---------------------------------------------------------------------------------------


def test_failures_say_what_could_not_be_read_never_why(tmp_path, fhir, caplog):
    fhir.observation_status = 500
    closed = RecordingServer()
    closed.close()  # a port that refuses connections
    with make_client(tmp_path, allowed_fhir_servers=f"{fhir.base},{closed.url}") as c, service_log(caplog):
        r = c.post("/cds-services/trial-matcher", json=hook(fhir.base))
        refused = c.post("/cds-services/trial-matcher", json=hook(f"{closed.url}/fhir"))
    assert r.status_code == 200 and "results (Observation) could not be read" in details(r)
    assert refused.status_code == 412
    for text in (r.text, refused.text):
        for secret in ("500", "HTTP", "ConnectError", "timed out", str(fhir.server.port), str(closed.port)):
            # random uuids (cards, suggestions) may hold "500" by chance: they say nothing of the failure
            assert secret not in re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "", text), secret
    assert any(getattr(rec, "error_type", "") == "HTTP 500" for rec in caplog.records)  # the operator sees why


# --- 4. other patients' data ---------------------------------------------------------------------------


def _restamp(res: dict, subject) -> dict:
    res = copy.deepcopy(res)
    for f in ("subject", "patient"):
        if f in res:
            if subject is None:
                del res[f]
            else:
                res[f] = subject
    return res


def _trials(r) -> list[str]:
    return sorted(ext(c)["trialId"] for c in r.json()["cards"])


def test_resources_not_about_the_context_patient_are_set_aside(tmp_path):
    own = hook_request("demo-amara")
    intruder = hook_request("demo-chen")["prefetch"]
    forms = [
        None,  # no subject
        {"identifier": {"system": "urn:mrn", "value": "demo-amara"}},  # identifier only
        {"reference": "http://other.example/fhir/Patient/demo-amara"},  # absolute, another server
        {"reference": "Patient/demo-chen"},
    ]
    mixed = copy.deepcopy(own)
    injected = 0
    for key in ("conditions", "observations", "medications"):
        for i, e in enumerate((intruder.get(key) or {}).get("entry", [])):
            mixed["prefetch"].setdefault(key, {"resourceType": "Bundle", "type": "searchset", "entry": []})
            mixed["prefetch"][key]["entry"].append({"resource": _restamp(e["resource"], forms[i % len(forms)])})
            injected += 1
    with make_client(tmp_path) as c:
        clean, dirty = (c.post("/cds-services/trial-matcher", json=body) for body in (own, mixed))
        alone = c.post("/cds-services/trial-matcher", json=hook_request("demo-chen"))
    assert clean.status_code == dirty.status_code == 200
    assert _trials(clean) != _trials(alone), "the two patients must differ for this test to mean anything"
    assert _trials(dirty) == _trials(clean)
    assert f"{injected} resource(s) not clearly about this patient were set aside" in details(dirty)


def test_medication_resources_count_only_when_referenced(tmp_path):
    req = hook_request("demo-amara")
    stray = {"resourceType": "Medication", "id": "stray", "code": {"text": "rituximab"}}
    req["prefetch"]["medications"]["entry"].append({"resource": stray})
    with make_client(tmp_path) as c:
        r = c.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 200 and "1 resource(s) not clearly about this patient were set aside" in details(r)


# --- 7. malformed input is 400 or a gap, never 500 ------------------------------------------------------


def _prefetch_with(resource: dict, search=None) -> dict:
    entry: dict = {"resource": resource}
    if search is not None:
        entry["search"] = search
    return {"patient": PATIENT, "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [entry]}}


OBS = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}


@pytest.mark.parametrize(
    "prefetch",
    [
        _prefetch_with({**OBS, "subject": "Patient/p1"}),
        _prefetch_with({**OBS, "subject": ["Patient/p1"]}),
        _prefetch_with({**OBS, "subject": {"reference": "Patient/p1"}}, search="match"),
        _prefetch_with({**OBS, "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "9999-12-31"}),
        {"patient": {**PATIENT, "birthDate": "9999-12-31"}},
        {"patient": {**PATIENT, "deceasedDateTime": "0001-01-01"}},
        {"patient": PATIENT, "observations": {"resourceType": "Bundle", "link": "next", "entry": "x"}},
    ],
    ids=["subject-string", "subject-list", "search-string", "date-9999", "birth-9999", "deceased-0001", "bundle-junk"],
)
def test_malformed_resources_are_gaps_not_500(tmp_path, prefetch):
    with make_client(tmp_path) as c:
        r = c.post("/cds-services/trial-matcher", json=hook(None, prefetch))
    assert r.status_code == 200


def test_draft_orders_entry_as_string_is_400(tmp_path):
    body = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": "p1", "draftOrders": {"resourceType": "Bundle", "entry": "x"}},
        "prefetch": {"patient": PATIENT},
    }
    with make_client(tmp_path) as c:
        r = c.post("/cds-services/trial-order-sign", json=body)
    assert r.status_code == 400 and "draftOrders" in r.text


@pytest.mark.parametrize("as_of", ["9999-12-31", "0001-01-01"])
def test_match_with_extreme_as_of_is_400(tmp_path, as_of):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": PATIENT}]}
    with make_client(tmp_path) as c:
        r = c.post("/match", params={"as_of": as_of}, json=bundle)
    assert r.status_code == 400 and "as_of" in r.text


def test_unexpected_errors_answer_500_without_a_traceback_or_the_input(tmp_path, caplog, monkeypatch):
    """Nothing of an unexpected exception but its class reaches the caller or the log (the server's own
    traceback printer included: TestClient re-raises whatever would have reached it)."""
    from cds_service.pipeline import Matcher

    async def boom(*_a, **_k):
        raise ValueError("Jane Doe, MRN 12345")

    monkeypatch.setattr(Matcher, "patient_view", boom)
    with make_client(tmp_path) as c, service_log(caplog):
        r = c.post("/cds-services/trial-matcher", json=hook(None, {"patient": PATIENT}))
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert any(getattr(x, "error_type", "") == "ValueError" for x in caplog.records)
    assert "Jane Doe" not in written(caplog) and "Traceback" not in written(caplog)


# --- 8-12. logs, stored sizes, framing, links, browsers ---------------------------------------------------


def test_access_log_names_the_route_not_the_checklist_token(tmp_path, caplog):
    secret = "A" * 43
    with make_client(tmp_path, log_level="INFO") as c, service_log(caplog):
        r = c.get(f"/checklist/{secret}")
    assert r.status_code == 404
    lines = [(x.method, x.path, x.status) for x in caplog.records if x.getMessage() == "request"]
    assert lines == [("GET", "/checklist/{token}", 404)] and secret not in written(caplog)


def test_access_log_has_one_line_per_request_with_its_status(tmp_path, caplog):
    """Answers from a route, from no route, and the bare 500 of an error escaping the app: one line each."""
    with make_client(tmp_path, log_level="INFO") as c, service_log(caplog):
        assert c.get("/cds-services").status_code == 200
        assert c.post("/nowhere", json={}).status_code == 404
    lines = [(x.method, x.path, x.status) for x in caplog.records if x.getMessage() == "request"]
    assert lines == [("GET", "/cds-services", 200), ("POST", "(no route)", 404)]
    assert all(isinstance(x.duration_ms, float) for x in caplog.records if x.getMessage() == "request")


def test_feedback_is_capped_and_unknown_fields_are_not_stored(tmp_path):
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:00:00Z"}
    with make_client(tmp_path, admin_token="adm") as c:
        too_many = {**item, "outcome": "accepted", "acceptedSuggestions": [{"id": f"s{i}"} for i in range(21)]}
        assert c.post("/cds-services/trial-matcher/feedback", json={"feedback": [too_many]}).status_code == 400
        long_comment = {**item, "overrideReason": {"userComment": "x" * 4001}}
        assert c.post("/cds-services/trial-matcher/feedback", json={"feedback": [long_comment]}).status_code == 400
        assert c.post("/cds-services/trial-matcher/feedback", json={"feedback": [item] * 101}).status_code == 400
        padded = {**item, "padding": "x" * 1_000_000, "overrideReason": {"userComment": "ok", "junk": "y" * 1000}}
        assert c.post("/cds-services/trial-matcher/feedback", json={"feedback": [padded]}).status_code == 200
        for _ in range(3):
            c.post("/cds-services/trial-matcher/feedback", json={"feedback": [item]})
        auth = {"Authorization": "Bearer adm"}
        page1 = c.get("/admin/feedback", params={"limit": 2}, headers=auth).json()
        page2 = c.get("/admin/feedback", params={"limit": 2, "before": page1["next"]}, headers=auth).json()
    assert page1["total"] == 4 and len(page1["feedback"]) == 2 and len(page2["feedback"]) == 2
    assert {f["id"] for f in page1["feedback"]}.isdisjoint(f["id"] for f in page2["feedback"])
    assert "next" not in c.get("/admin/feedback", params={"limit": 10}, headers=auth).json() or True
    stored = json.dumps(page1["feedback"] + page2["feedback"])
    assert "xxxxxxxx" not in stored and "yyyy" not in stored


def test_checklist_pages_cannot_be_framed(tmp_path):
    with make_client(tmp_path, trusted_hosts="testserver") as c:
        card = c.post("/cds-services/trial-matcher", json=hook_request("demo-amara")).json()["cards"][0]
        url = next(link["url"] for link in card["links"] if "/checklist/" in link["url"])
        page = c.get(url.removeprefix("http://testserver"))
        missing = c.get("/checklist/" + "B" * 43)
    for r in (page, missing):
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"


def test_links_use_the_host_header_only_when_trusted(tmp_path):
    with make_client(tmp_path) as c:
        untrusted = c.post("/cds-services/trial-matcher", json=hook_request("demo-amara"))
        trusted = c.post(
            "/cds-services/trial-matcher", json=hook_request("demo-amara"), headers={"Host": "localhost:8000"}
        )
    assert untrusted.status_code == trusted.status_code == 200
    assert untrusted.json()["cards"] and trusted.json()["cards"]
    assert "/checklist/" not in untrusted.text and "testserver" not in untrusted.text
    for card in trusted.json()["cards"]:
        assert any(link["url"].startswith("http://localhost:8000/checklist/") for link in card["links"])


def test_with_auth_off_no_web_page_can_run_hooks(tmp_path):
    with make_client(tmp_path) as c:
        preflight = c.options(
            "/cds-services/trial-matcher",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        simple = c.post(
            "/cds-services/trial-matcher",
            content=json.dumps(hook_request("demo-amara")),
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 415 and "access-control-allow-origin" not in simple.headers


# --- 13. the typed request in OpenAPI ---------------------------------------------------------------------


def test_openapi_types_every_hook_request(tmp_path):
    with make_client(tmp_path) as c:
        schema = c.get("/openapi.json").json()
    comps = schema["components"]["schemas"]
    for path, model in [
        ("/cds-services/trial-matcher", "PatientViewRequest"),
        ("/cds-services/trial-order-select", "OrderSelectRequest"),
        ("/cds-services/trial-order-sign", "OrderSignRequest"),
    ]:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        props = comps[model]["properties"]
        assert {"hook", "hookInstance", "context", "prefetch", "fhirServer", "fhirAuthorization"} <= set(props)
    assert "draftOrders" in comps["OrderContext"]["required"]
    assert comps["PatientViewContext"]["properties"]["patientId"]["pattern"]


def test_a_400_names_where_and_what_but_quotes_nothing_the_caller_sent(tmp_path):
    """Pydantic quotes the input in some messages (a bad UUID's first odd character) and in a location's
    dict keys; the 400 keeps the field names, the positions and the kind of error, and none of the words."""
    secret = "Qz9Secret"  # stands for a token or a patient's name pasted into the wrong place
    req = hook(None, {f"{secret} key with spaces": {"resourceType": 5}, "patient": 5})
    req["hookInstance"] = f"{secret}-not-a-uuid"
    req["context"] = {"patientId": "p1", f"{secret}.field": []}
    with make_client(tmp_path) as c:
        r = c.post("/cds-services/trial-matcher", json=req)
    assert r.status_code == 400
    body = r.json()
    assert "Qz9" not in r.text and "`" not in r.text
    where = {d["loc"]: d["msg"] for d in body["details"]}
    assert where["body.hookInstance"] == "Input should be a valid UUID"
    assert "body.prefetch.patient" in where  # a key that is a name is said, so the EHR can fix it
    assert any(loc.startswith("body.prefetch.<key>") for loc in where)
