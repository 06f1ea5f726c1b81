"""A real FHIR server for the integration tests, started here, loaded with the demo patients.

Two real servers, each integration test parametrized over both (ids `sekmet` and `hapi`):
- sekmet-fhir 0.1.1 from .venv-sekmet (scripts/fhir-servers.sh installs it), in-memory database, simulator
  off, static bearer token required (so the tests prove the hook's token is used);
- HAPI FHIR JPA 8.8.0, our Spring Boot build of HAPI's JPA libraries (tools/hapi-fhir, scripts/hapi-fhir.sh),
  H2 in memory, no authentication; its next links point at the base (`/fhir?_getpages=...`).
`FHIR_BASE_URL=<url>` (and `FHIR_TOKEN=<token>` if it needs one) runs the suite against any server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import reading_settings

from cds_service.api.app import create_app
from demo.load import load

ROOT = Path(__file__).resolve().parents[2]
SEKMET = ROOT / ".venv-sekmet" / "bin" / "sekmet"
TOKEN = "integration-test-token-7f3a9c"


@dataclass(frozen=True)
class FhirServer:
    base: str
    token: str | None
    name: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, token: str | None, proc: subprocess.Popen | None, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"FHIR server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/metadata", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"FHIR server at {url} did not answer within {seconds}s")


# Every integration test runs against each real server: `pytest -k hapi` selects the HAPI runs.
SERVERS = ["external"] if os.environ.get("FHIR_BASE_URL") else ["sekmet", "hapi"]


@pytest.fixture(scope="session", params=SERVERS)
def fhir_server(request: pytest.FixtureRequest) -> FhirServer:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def external_server() -> FhirServer:
    server = FhirServer(os.environ["FHIR_BASE_URL"].rstrip("/"), os.environ.get("FHIR_TOKEN"), "external")
    _wait(server.base, server.token, None, 120)
    load(server.base, token=server.token)
    return server


@pytest.fixture(scope="session")
def hapi_server() -> Iterator[FhirServer]:
    """HAPI FHIR JPA 8.8.0 (tools/hapi-fhir, built by scripts/fhir-servers.sh), started once per session."""
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("HAPI FHIR SKIPPED: Java 17+ and Maven are needed to build and run tools/hapi-fhir")
    port = _free_port()
    script = ROOT / "scripts" / "hapi-fhir.sh"
    subprocess.run([str(script), "start", str(port)], check=True, cwd=ROOT, timeout=900)
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        load(base)
        yield FhirServer(base, None, "HAPI FHIR JPA 8.8.0")
    finally:
        subprocess.run([str(script), "stop", str(port)], cwd=ROOT, timeout=60)


@pytest.fixture(scope="session")
def sekmet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    if not SEKMET.exists():
        pytest.fail("sekmet is not installed: run scripts/test.sh (it runs scripts/fhir-servers.sh)")
    work = tmp_path_factory.mktemp("sekmet")
    port = _free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    (work / "settings.yaml").write_text(
        f"base_url: {base}\nhost: 127.0.0.1\nport: {port}\ndb_path: ':memory:'\ndata_dir: {work}/data\n"
        "log_inbound: false\nsimulator:\n  enabled: false\n"
        f"server_auth:\n  types: [bearer]\n  tokens: [{TOKEN}]\n",
        encoding="utf-8",
    )
    log = (work / "sekmet.log").open("w")
    proc = subprocess.Popen(
        [str(SEKMET), "serve", "-c", str(work / "settings.yaml")], cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait(base, TOKEN, proc, 60)
        load(base, token=TOKEN)
        yield FhirServer(base, TOKEN, "sekmet-fhir 0.1.1")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work / "data", ignore_errors=True)


@pytest.fixture(scope="session")
def service(fhir_server: FhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service in-process; it talks to the FHIR server over real HTTP."""
    db = tmp_path_factory.mktemp("service") / "feedback.sqlite3"
    settings = reading_settings(fhir_server.base, db, fhir_server.token, admin_token="admin-secret-for-tests")
    with TestClient(create_app(settings)) as client:
        yield client
