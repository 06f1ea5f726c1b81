"""Hostile input, round two (issue 23): each test here failed on the code before its fix.

Servers that must never be reached, or whose requests are counted, are real loopback sockets
(tests/servers.py and the small ones below); respx only injects faults into the $export client.
"""

from __future__ import annotations

import asyncio

import pytest
import respx

from cds_service.fhir.urls import AllowList, Origin, UnsafeUrl
from cds_service.screening.export import BulkExport, ExportError
from tests.test_hostile_input import TOKEN, HostileFhir, hook, make_client

# --- 1. `;` path parameters and dot segments a servlet container resolves -------------------------------

# Tomcat drops `;params` from each segment, then resolves dot segments: every one of these is /other there.
SEMICOLON_ESCAPES = [
    "/fhir/..;/other",
    "/fhir/..;jsessionid=1/other",
    "/fhir/%2e%2e;/other",
    "/fhir/.%2E;x/other",
    "/fhir/..%3b/other",
    "/fhir/Patient;x/../../other",
]


@pytest.mark.parametrize("path", SEMICOLON_ESCAPES)
def test_follow_refuses_path_parameters_and_names_the_rule_not_the_url(path):
    base = Origin.parse("http://127.0.0.1:9999/fhir")
    with pytest.raises(UnsafeUrl) as e:
        base.follow(f"http://127.0.0.1:9999{path}?page=2")
    assert "127.0.0.1" not in str(e.value) and "other" not in str(e.value)


@pytest.mark.parametrize("path", SEMICOLON_ESCAPES + ["/fhir;x", "/fhir/..;"])
def test_a_fhir_base_with_path_parameters_is_refused(path):
    with pytest.raises(UnsafeUrl):
        Origin.parse(f"https://ehr.example.org{path}")
    assert AllowList.parse("https://ehr.example.org/fhir").check(f"https://ehr.example.org{path}") is None


def test_fhir_server_with_a_semicolon_dot_segment_is_400_and_never_contacted(tmp_path):
    fhir = HostileFhir()
    try:
        with make_client(tmp_path, allowed_fhir_servers=fhir.base) as c:
            r = c.post("/cds-services/trial-matcher", json=hook(f"{fhir.base}/..;/other"))
        assert r.status_code == 400 and "fhirServer" in r.text and "';'" in r.text
        assert "other" not in r.text and TOKEN not in r.text
        assert fhir.server.requests == []
    finally:
        fhir.server.close()


def test_next_links_with_semicolon_dot_segments_are_not_followed(tmp_path):
    fhir = HostileFhir()
    try:
        with make_client(tmp_path, allowed_fhir_servers=fhir.base) as c:
            for path in SEMICOLON_ESCAPES:
                fhir.next_link = f"{fhir.server.url}{path}?page=2"
                assert c.post("/cds-services/trial-matcher", json=hook(fhir.base)).status_code == 200, path
            assert not [s.path for s in fhir.server.requests if "page=2" in s.path]
            fhir.next_link = f"{fhir.base}/Observation?page=2"  # the control: a plain next link is followed
            assert c.post("/cds-services/trial-matcher", json=hook(fhir.base)).status_code == 200
        assert [s.path for s in fhir.server.requests if "page=2" in s.path]
    finally:
        fhir.server.close()


EXPORT_BASE = "http://127.0.0.1:9999/fhir"


@respx.mock
@pytest.mark.parametrize("path", SEMICOLON_ESCAPES)
def test_export_status_urls_with_path_parameters_are_never_contacted(tmp_path, path):
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(
        202, headers={"Content-Location": f"http://127.0.0.1:9999{path}"}
    )
    elsewhere = respx.get(url__regex=r"/other").respond(200, json={})
    with pytest.raises(ExportError, match="not contacted"):
        asyncio.run(BulkExport(EXPORT_BASE, "tok").run(tmp_path))
    assert not elsewhere.called


@respx.mock
@pytest.mark.parametrize("path", SEMICOLON_ESCAPES)
def test_export_file_urls_with_path_parameters_are_never_contacted(tmp_path, path):
    status = f"{EXPORT_BASE}/$export-poll-status?_jobId=1"
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": status})
    manifest = {"requiresAccessToken": True, "output": [{"type": "Patient", "url": f"http://127.0.0.1:9999{path}"}]}
    respx.get(status).respond(200, json=manifest)
    elsewhere = respx.get(url__regex=r"/other").respond(200, content=b"{}\n")
    with pytest.raises(ExportError, match="not contacted"):
        asyncio.run(BulkExport(EXPORT_BASE, "tok").run(tmp_path))
    assert not elsewhere.called
