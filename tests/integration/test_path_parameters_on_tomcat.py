"""`..;` against a real servlet container: the project's HAPI runs on Spring Boot's embedded Tomcat, which
drops `;params` from each path segment before resolving dot segments. So `/fhir/..;/other` really leaves
the FHIR application there, and the service must never send a request (or the EHR's token) to such a URL,
whether it arrives as `fhirServer` or as a `Bundle.link[next]` in prefetch.

The first test shows that `/fhir/..;/x` is answered outside HAPI's FHIR servlet (the attack works here);
the second gives the service such URLs as `fhirServer` and expects 400 before any request, with a
recording loopback server standing behind the same trick to show that nothing, token included, is sent."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.servers import RecordingServer

pytestmark = pytest.mark.integration


def test_tomcat_resolves_semicolon_dot_segments_so_the_attack_is_real(hapi_server):
    origin = hapi_server.base.rsplit("/fhir", 1)[0]
    inside = httpx.get(f"{origin}/fhir/nothing-here", timeout=30).json()
    outside = httpx.get(f"{origin}/fhir/..;/nothing-here", timeout=30).json()
    assert inside["resourceType"] == "OperationOutcome"  # HAPI's FHIR servlet answers what is under /fhir
    # textually under /fhir, but Tomcat routes it outside the FHIR servlet: Spring's own error page answers
    assert "resourceType" not in outside and outside["path"] == "/fhir/..;/nothing-here"


def test_the_service_refuses_semicolon_dot_segments_before_any_request(service, hapi_server):
    origin = hapi_server.base.rsplit("/fhir", 1)[0]
    recorder = RecordingServer()
    try:
        for bad in (f"{origin}/fhir/..;/fhir", f"{origin}/fhir/%2e%2e;jsessionid=x/fhir", f"{recorder.url}/fhir/..;/x"):
            req = {
                "hook": "patient-view",
                "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": "demo-amara", "userId": "Practitioner/1"},
                "fhirServer": bad,
                "fhirAuthorization": {
                    "access_token": "tok-must-not-leave",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "patient/*.read",
                    "subject": "x",
                },
            }
            r = service.post("/cds-services/trial-matcher", json=req)
            assert r.status_code == 400, (bad, r.text[:200])
            assert urlsplit(bad).path not in r.text  # the rule is named, never the URL
        assert recorder.requests == []  # nothing reached the host behind the trick, token or not
    finally:
        recorder.close()
