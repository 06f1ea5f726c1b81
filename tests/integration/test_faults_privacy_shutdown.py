"""The service as a real process: misbehaving FHIR servers, no patient data in logs, graceful shutdown."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import plain

from bench.service import ServiceProcess
from demo.hook_request import fhir_authorization

from .misbehaving_fhir import PATIENT, MisbehavingFhir

pytestmark = pytest.mark.integration
BUDGET = 1.5
TOKEN = "tok-SECRET-4f9e2c7a1b"
SLE = {
    "resourceType": "Condition",
    "id": "sle-1",
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
}


def Service(workdir: Path, **env: str) -> ServiceProcess:  # noqa: N802 - reads like the class it builds
    """The service as a real process, configured for these tests (overridable per test)."""
    defaults = {
        "TRIAL_MATCHER_HOOK_BUDGET_SECONDS": str(BUDGET),
        "TRIAL_MATCHER_FHIR_TIMEOUT_SECONDS": "1.0",
        "TRIAL_MATCHER_LOG_LEVEL": "DEBUG",
    }
    return ServiceProcess(workdir, **{**defaults, **env})


@pytest.fixture(scope="module")
def fhir() -> Iterator[MisbehavingFhir]:
    server = MisbehavingFhir()
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, fhir: MisbehavingFhir) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("svc"), TRIAL_MATCHER_ALLOWED_FHIR_SERVERS=f"http://127.0.0.1:{fhir.port}")
    yield svc
    svc.stop()


def hook(fhir_server: str, prefetch: dict | None = None, token: str | None = TOKEN) -> dict:
    req = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "context": {"patientId": PATIENT["id"], "userId": "Practitioner/1"},
    }
    if token:
        req["fhirAuthorization"] = fhir_authorization(token)
    if prefetch is not None:
        req["prefetch"] = prefetch
    return req


@pytest.mark.parametrize(
    ("mode", "statuses"),
    [
        ("ok", {200}),
        ("slow", {200}),  # Patient arrives; searches cut at the budget: cards with the gap stated
        ("halfdown", {200}),
        ("drop", {412}),
        ("500", {412}),
        ("garbage", {412}),
        ("401", {412}),
    ],
)
def test_misbehaving_fhir_server_never_500_never_hangs(service, fhir, mode, statuses):
    t0 = time.monotonic()
    r = httpx.post(f"{service.url}/cds-services/trial-matcher", json=hook(fhir.base(mode)), timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code in statuses, r.text[:300]
    assert elapsed < BUDGET + 1.5, f"{mode}: answered in {elapsed:.2f}s"
    if r.status_code == 200 and mode == "ok":
        assert r.json()["cards"]
    elif r.status_code == 200:  # the problem list could not be read: the trials' disease is unchecked, no card
        assert r.json()["cards"] == []


def test_fhir_searches_run_concurrently(service, fhir):
    """Reads that each take 250 ms, for a patient inside the cohorts: the Patient and Conditions at once, then
    the rest of the chart at once (gather.py: the rest only for a patient some cohort may take), so two
    delays plus overhead; one after another, the dozen reads would take 3 s."""
    t0 = time.monotonic()
    r = httpx.post(f"{service.url}/cds-services/trial-matcher", json=hook(fhir.base("delay")), timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert sum(1 for p in fhir.requests if p.startswith("/delay/")) >= 6
    assert elapsed < 0.25 * 3, f"{elapsed:.2f}s: the FHIR reads did not run concurrently"


def test_prefetched_patient_survives_a_dead_server(service, fhir):
    r = httpx.post(
        f"{service.url}/cds-services/trial-matcher",
        json=hook(fhir.base("drop"), prefetch={"patient": PATIENT}),
        timeout=30,
    )
    assert r.status_code == 200


def test_invalid_resource_is_skipped_and_reported(service):
    bad_obs = {
        "resourceType": "Observation",
        "id": "bad-1",
        "status": "final",
        "code": 7,
        "subject": {"reference": f"Patient/{PATIENT['id']}"},
    }
    prefetch = {
        "patient": PATIENT,
        "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": bad_obs}]},
        "conditions": {  # the trials' disease, so the patient is in their cohort and gets cards
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": SLE | {"subject": {"reference": f"Patient/{PATIENT['id']}"}}}],
        },
        "medications": None,
        "medicationRequests": None,
        "immunizations": None,
    }
    r = httpx.post(
        f"{service.url}/cds-services/trial-matcher", json=hook("", prefetch, None) | {"fhirServer": None}, timeout=30
    )
    assert r.status_code == 200
    assert "Observation/bad-1 failed FHIR R4 validation" in plain(r.json()["cards"][0]["detail"])


def test_body_size_limit(tmp_path):
    svc = Service(tmp_path, TRIAL_MATCHER_MAX_BODY_BYTES="20000")
    try:
        big = hook("http://127.0.0.1:1/fhir") | {"padding": "x" * 30000}
        assert httpx.post(f"{svc.url}/cds-services/trial-matcher", json=big).status_code == 413

        def chunks():
            yield b'{"hook": "patient-view", "padding": "'
            for _ in range(10):
                yield b"y" * 5000
            yield b'"}'

        r = httpx.post(
            f"{svc.url}/cds-services/trial-matcher", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
    finally:
        svc.stop()


def test_no_patient_data_or_token_in_any_log_line(service, fhir):
    """A full hook with an identifiable patient and a token; every log line of the process is searched."""
    calls = [
        hook(fhir.base("ok")),
        hook(fhir.base("slow")),
        hook(fhir.base("500")),
        hook(fhir.base("ok"), prefetch={"patient": PATIENT}),
        {
            "hook": "patient-view",
            "hookInstance": "not-a-uuid",
            "context": {"patientId": PATIENT["id"]},
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer"},
        },  # 400, token in the body
        {**hook(fhir.base("ok")), "fhirServer": "http://198.51.100.7/fhir"},  # off the allow-list
    ]
    for body in calls:
        httpx.post(f"{service.url}/cds-services/trial-matcher", json=body, timeout=30)
    httpx.post(
        f"{service.url}/cds-services/trial-matcher/feedback",
        json={
            "feedback": [
                {
                    "card": str(uuid.uuid4()),
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-23T10:00:00Z",
                    "overrideReason": {"userComment": "Zebulon declined, MRN-99887766"},
                }
            ]
        },
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as raw:  # not HTTP: uvicorn's warning
        raw.sendall(f"Zebulon {TOKEN} MRN-99887766\r\n\r\n".encode())
        raw.recv(1024)
    time.sleep(0.3)
    logs = service.log_path.read_text()
    assert "hook answered" in logs and "hookInstance" in logs  # the logs are there, correlated
    for secret in [TOKEN, "Zebulon", "Quixote", "MRN-99887766", "1971-02-03", PATIENT["id"]]:
        assert secret not in logs, f"{secret!r} leaked into the logs"
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]  # every line JSON, uvicorn's too
    assert {"uvicorn.error", "trial_matcher"} <= {line["logger"] for line in lines}
    assert any(line["msg"] == "Invalid HTTP request received." for line in lines)


def test_graceful_shutdown_loses_no_feedback(tmp_path):
    svc = Service(tmp_path)
    ok = 0
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        nonlocal ok
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                body = {
                    "feedback": [
                        {
                            "card": str(uuid.uuid4()),
                            "outcome": "accepted",
                            "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
                            "outcomeTimestamp": "2026-11-23T10:00:00Z",
                        }
                    ]
                }
                try:
                    r = c.post(f"{svc.url}/cds-services/trial-matcher/feedback", json=body)
                except httpx.HTTPError:
                    continue  # refused once shutdown began: never answered, so never promised
                if r.status_code == 200:
                    with lock:
                        ok += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    svc.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    # uvicorn finishes in-flight requests, then re-raises SIGTERM: -15 after a clean shutdown
    assert svc.proc.wait(20) in (0, -signal.SIGTERM)
    svc.log.close()
    assert "Finished server process" in svc.log_path.read_text()
    rows = sqlite3.connect(svc.db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    assert ok > 50 and rows == ok
