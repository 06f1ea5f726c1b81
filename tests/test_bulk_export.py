"""The $export client under faults (fakes only inject faults; tests/integration runs it against HAPI)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from cds_service.screening.export import BulkExport, ExportError, _retry_after

BASE = "http://127.0.0.1:9999/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=1"


def run(export: BulkExport, out):
    return asyncio.run(export.run(out))


def kick_off(location: str = STATUS):
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": location})


@respx.mock
def test_a_status_url_off_the_server_is_never_contacted(tmp_path):
    kick_off("http://attacker.example/poll")
    elsewhere = respx.get(url__startswith="http://attacker.example").respond(200, json={})
    with pytest.raises(ExportError, match="outside"):
        run(BulkExport(BASE, "tok"), tmp_path)
    assert not elsewhere.called


@respx.mock
def test_file_urls_off_the_server_are_refused_and_open_files_get_no_token(tmp_path):
    kick_off()
    respx.get(STATUS).respond(
        200, json={"requiresAccessToken": False, "output": [{"type": "Patient", "url": f"{BASE}/Binary/1"}]}
    )
    respx.delete(STATUS).respond(202)
    file = respx.get(f"{BASE}/Binary/1").respond(200, content=b'{"resourceType":"Patient","id":"p1"}\n')
    files = run(BulkExport(BASE, "secret-token"), tmp_path)
    assert [f.name for f in files] == ["Patient.000.ndjson"] and files[0].read_bytes().startswith(b'{"resourceType"')
    assert "authorization" not in file.calls[0].request.headers  # requiresAccessToken false: the token stays home


@respx.mock
def test_file_urls_off_the_server_are_refused(tmp_path):
    kick_off()
    respx.get(STATUS).respond(
        200, json={"requiresAccessToken": True, "output": [{"type": "Patient", "url": "http://127.0.0.1:9998/x"}]}
    )
    other_port = respx.get(url__startswith="http://127.0.0.1:9998").respond(200)
    with pytest.raises(ExportError, match="outside"):
        run(BulkExport(BASE, "secret-token"), tmp_path)
    assert not other_port.called


@respx.mock
def test_polling_honours_retry_after_up_to_the_cap_and_reports_refusals(tmp_path, monkeypatch):
    kick_off()
    answers = iter([httpx.Response(202, headers={"Retry-After": "120", "X-Progress": "50%"}),
                    httpx.Response(200, json={"requiresAccessToken": True, "output": []})])  # fmt: skip
    respx.get(STATUS).mock(side_effect=lambda request: next(answers))
    respx.delete(STATUS).respond(202)
    slept: list[float] = []

    async def fake_sleep(s):
        slept.append(s)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    assert run(BulkExport(BASE, None, max_poll_seconds=3), tmp_path) == []
    assert slept == [3]  # Retry-After 120 s, capped at 3


@respx.mock
def test_a_refused_kick_off_says_so(tmp_path):
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(400, json={"resourceType": "OperationOutcome"})
    with pytest.raises(ExportError, match="HTTP 400"):
        run(BulkExport(BASE, None), tmp_path)


def test_retry_after_reads_seconds_and_dates():
    assert _retry_after("7", 1) == 7
    assert _retry_after(None, 2) == 2
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 5) == 0  # a date in the past: poll now
    assert _retry_after("soon", 4) == 4


def test_a_server_url_with_credentials_or_query_is_refused():
    for bad in ("http://u:p@127.0.0.1/fhir", "http://127.0.0.1/fhir?x=1", "ftp://127.0.0.1/fhir"):
        with pytest.raises(ExportError):
            BulkExport(bad, None)
