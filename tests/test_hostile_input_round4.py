"""Hostile input, round 4: does any error body quote what the caller sent?

Attacks the hook endpoints (patient-view, order-select, order-sign), feedback and /match with a marker
("Qz9...") in every place a caller controls: wrong types, bad literals, too-long strings, bad UUIDs,
dates and URLs, prefetch keys, nested FHIR resources, draftOrders, feedback items, path and query
parameters, and raw bodies that are not JSON. An error body may name the field and the kind of error
(an integrator has to fix the call), never the value, a key or a path segment the caller chose.
Tests marked `# LEAK:` pin an echo found by this round and closed (each fails if it returns).
"""

from __future__ import annotations

import uuid

import pytest

from tests.test_hostile_input import PATIENT, hook, make_client

M = "Qz9Marker"  # stands for a token, a patient's name or an MRN sent in the wrong place
HOOK = "/cds-services/trial-matcher"
SIGN = "/cds-services/trial-order-sign"
FEEDBACK = "/cds-services/trial-matcher/feedback"
PREFETCH = {"patient": PATIENT}
ITEM = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:00:00Z"}


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("round4")) as client:
        yield client


def quiet(r, status: int) -> dict:
    """The answer has this status and quotes nothing of the marker (nor a backticked input)."""
    assert r.status_code == status, r.text
    assert "Qz9" not in r.text and "`" not in r.text, r.text
    return {d["loc"]: d["msg"] for d in r.json().get("details", [])}


def pv(**over) -> dict:
    return {**hook(None, {"patient": PATIENT}), **over}


def sign(**ctx) -> dict:
    draft = {"resourceType": "Bundle", "entry": []}
    context = {"patientId": "p1", "draftOrders": draft, **ctx}
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": PREFETCH}


def auth(**kw) -> dict:
    return pv(fhirServer="http://ehr.example/fhir", fhirAuthorization={"access_token": "t", **kw})


def draft(*entry) -> dict:
    return sign(draftOrders={"resourceType": "Bundle", "entry": list(entry)})


UUID = "Input should be a valid UUID"
ORDERS, ITEM0 = "body.context.draftOrders.entry", "body.feedback.0"

# --- safe shapes: each names where and what, and quotes nothing --------------------------------------


@pytest.mark.parametrize(
    "body, loc, msg",
    [
        (pv(hookInstance=M), "body.hookInstance", UUID),
        (pv(hookInstance=f"urn:uuid:{M}"), "body.hookInstance", UUID),
        (pv(hookInstance=f"12345678-1234-1234-1234-123456789012{M}"), "body.hookInstance", UUID),
        (pv(hookInstance=f"{M}\u00e9\u0000"), "body.hookInstance", UUID),
        (pv(hook=M), "body.hook", "Input should be 'patient-view'"),
        (pv(context={"patientId": f"{M} Doe"}), "body.context.patientId", "String should match pattern"),
        (pv(context={"patientId": "p1", "userId": M * 30}), "body.context.userId", "at most 256 characters"),
        (pv(context=M), "body.context", "Input should be a valid dictionary"),
        (pv(fhirServer=f"ftp://{M}/fhir"), "body.fhirServer", "only http and https URLs are fetched"),
        (pv(fhirServer=f"http://{M}/fhir?q={M}"), "body.fhirServer", "no query or fragment"),
        (pv(fhirServer=f"http://[{M}/fhir"), "body.fhirServer", "not a well-formed URL"),
        (auth(access_token=M, token_type=M), "body.fhirAuthorization.token_type", "token_type must be Bearer"),
        (auth(access_token=M * 2000), "body.fhirAuthorization.access_token", "at most"),
        (auth(expires_in=M), "body.fhirAuthorization.expires_in", "Input should be a valid integer"),
        (pv(prefetch={f"{M} Doe, MRN 12345": 5}), "body.prefetch.<key>", "Input should be a valid dictionary"),
        (pv(prefetch={f"{M}\u00e9": 5}), "body.prefetch.<key>", "Input should be a valid dictionary"),
        (pv(prefetch={M + "_" * 60: None}), "body.prefetch.<key>.<key>", "at most 64 characters"),
        (pv(prefetch={"patient": {"resourceType": 5, "name": M}}), "body.prefetch.patient", "needs a resourceType"),
        (pv(prefetch={"patient": M}), "body.prefetch.patient", "Input should be a valid dictionary"),
    ],
)
def test_hook_400_names_the_field_not_the_value(c, body, loc, msg):
    where = quiet(c.post(HOOK, json=body), 400)
    assert loc in where and msg in where[loc], where


@pytest.mark.parametrize(
    "body, loc, msg",
    [
        (sign(draftOrders={"resourceType": M}), "body.context.draftOrders.resourceType", "Input should be 'Bundle'"),
        (draft({"resource": {"resourceType": 1, "id": M}}), f"{ORDERS}.0.resource", "needs a resourceType"),
        (draft({"fullUrl": [M]}), f"{ORDERS}.0.fullUrl", "Input should be a valid string"),
        (draft(M), f"{ORDERS}.0", "Input should be a valid dictionary"),
        (draft(*[{"fullUrl": M}] * 51), ORDERS, "at most 50 items"),
        (sign(selections=[M * 30]), "body.context.selections.0", "at most 256 characters"),
        (sign(selections=[{M: M}]), "body.context.selections.0", "Input should be a valid string"),
        ({**sign(), "hook": M}, "body.hook", "Input should be 'order-sign'"),
    ],
)
def test_order_hook_400_names_the_field_not_the_value(c, body, loc, msg):
    where = quiet(c.post(SIGN, json=body), 400)
    assert loc in where and msg in where[loc], where


@pytest.mark.parametrize(
    "item, loc, msg",
    [
        ({**ITEM, "outcome": M}, "body.feedback.0.outcome", "Input should be 'accepted' or 'overridden'"),
        ({**ITEM, "card": M * 20}, "body.feedback.0.card", "at most 128 characters"),
        ({**ITEM, "outcomeTimestamp": M * 10}, "body.feedback.0.outcomeTimestamp", "at most 64 characters"),
        (
            {**ITEM, "overrideReason": {"reason": {"code": M * 40}}},
            f"{ITEM0}.overrideReason.reason.code",
            "at most 256",
        ),
        ({**ITEM, "acceptedSuggestions": [{"id": M * 20}]}, "body.feedback.0.acceptedSuggestions.0.id", "at most 128"),
        ({**ITEM, "outcome": "accepted", M: M}, "body.feedback.0", "needs acceptedSuggestions"),
    ],
)
def test_feedback_400_names_the_field_not_the_value(c, item, loc, msg):
    where = quiet(c.post(FEEDBACK, json={"feedback": [item]}), 400)
    assert loc in where and msg in where[loc], where


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hook": "patient-view", "Qz9Marker": ',  # cut short
        b'{"hook": Qz9Marker}',  # a bare word
        b'{"hook": "Qz9\\x"}',  # a bad escape
        b'{"hook": "Qz9\xff\xfe"}',  # not UTF-8
        b'{"hook": "\\ud800Qz9Marker"}',  # a lone surrogate
        b'{"hookInstance": NaN, "Qz9Marker": 1}',
        b'{"hookInstance": 1e999999, "Qz9Marker": 1}',
        b"[" * 2000 + b'"Qz9Marker"' + b"]" * 2000,  # deeper than the parser goes
        b"Qz9Marker",
    ],
)
@pytest.mark.parametrize("path", [HOOK, SIGN, FEEDBACK, "/match"])
def test_a_body_that_is_not_json_is_400_with_a_position_only(c, path, raw):
    where = quiet(c.post(path, content=raw, headers={"content-type": "application/json"}), 400)
    [(loc, msg)] = where.items()
    assert msg == "JSON decode error" and loc.startswith("body.") and loc.removeprefix("body.").isdigit()


def test_an_escaped_marker_is_not_unescaped_into_the_answer(c):
    raw = b'{"hookInstance": "\\u0051z9Marker", "hook": "\\u0051z9"}'
    where = quiet(c.post(HOOK, content=raw, headers={"content-type": "application/json"}), 400)
    assert where["body.hookInstance"] == UUID and where["body.hook"] == "Input should be 'patient-view'"


def test_match_400s_name_the_field_or_the_problem_not_the_value(c):
    two = {"resourceType": "Bundle", "entry": [{"resource": {**PATIENT, "id": i}} for i in (M, M + "2")]}
    assert quiet(c.post("/match", json={"resourceType": M}), 400) == {"body.resourceType": "Input should be 'Bundle'"}
    assert quiet(c.post("/match", params={"as_of": f"2020-13-{M}"}, json={"resourceType": "Bundle"}), 400) == {
        "query.as_of": "Input should be a valid date or datetime"
    }
    assert "query.patient" in quiet(c.post("/match", params={"patient": f"{M}!"}, json={"resourceType": "Bundle"}), 400)
    mixed = c.post("/match", json=two)
    quiet(mixed, 400)
    assert "2 different Patient" in mixed.text


# --- leaks this round found, closed: each fails if the echo returns -------------------------------------


def test_a_name_like_prefetch_key_is_not_quoted_in_a_400(c):
    # LEAK: `where` kept any key matching [A-Za-z_][A-Za-z0-9_-]{0,63}, so a caller's own key (a name, an MRN,
    # an opaque token or a JWT segment up to 64 characters) came back as 'body.prefetch.Qz9Marker'. Only keys
    # the service itself names (QUERIES: patient, conditions, ...) need to be said.
    for key in (M, f"JaneDoe_{M}", M + "x" * 55):
        where = quiet(c.post(HOOK, json=pv(prefetch={key: 5})), 400)
        assert list(where) == ["body.prefetch.<key>"], where


def test_a_412_names_an_ignored_prefetch_key_only_when_it_is_a_plain_name(c):
    # By design the hook says which prefetch keys it ignored, so an integrator can fix the EHR's prefetch
    # configuration (a template name, not patient data): plain names of up to 40 characters only. A key with
    # anything else in it is counted, not named; `$` once let a key ending in a newline through.
    r = c.post(HOOK, json=pv(prefetch={"allergiesExtra": None}))
    assert r.status_code == 412 and "were ignored: allergiesExtra" in r.text
    for key in (f"{M}\n", f"{M} Doe", f"{M}." + "x" * 10, M + "x" * 40):
        r = c.post(HOOK, json=pv(prefetch={key: None}))
        quiet(r, 412)
        assert "1 prefetch key(s) this service does not ask for were ignored" in r.text


def test_feedback_to_an_unknown_service_does_not_quote_its_id(c):
    # LEAK: `feedback` raised HTTPException(404, f"no CDS service '{service_id[:64]}'"): the path segment returned.
    for sid in (M, "Qz9%20Marker"):
        r = c.post(f"/cds-services/{sid}/feedback", json={"feedback": [ITEM]})
        quiet(r, 404)
        assert "no CDS service" in r.text


def test_match_with_an_unknown_trial_does_not_quote_it(c):
    # LEAK: /match answered 404 f"unknown trial '{t[:20]}'": up to 20 characters of the query value returned.
    for trial in (M, "x" * 17 + M):
        r = c.post("/match", params={"trial": trial}, json={"resourceType": "Bundle", "entry": [{"resource": PATIENT}]})
        quiet(r, 404)
        assert "unknown trial" in r.text
