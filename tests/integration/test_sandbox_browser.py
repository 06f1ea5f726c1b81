"""A browser EHR on another loopback origin, in real headless Chromium: discovery from the service, prefetch
from the project's HAPI (first page only, as the CDS Hooks sandbox sends it), the hook, cards rendered from
their Markdown, and the checklist behind a card. Both CORS setups are on trial: the service's default with
authentication off (pages on this machine) and HAPI's CorsInterceptor (scripts/hapi-fhir.sh).

Screenshots: test-artifacts/browser/sandbox-cards.png (docs/sandbox-cards.png in the README is one of them).
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bench.service import ServiceProcess

from .test_browser import ARTIFACTS, ROOT, _missing

pytestmark = pytest.mark.integration
PAGES = ROOT / "tests" / "browser"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test page server says nothing
        pass


@pytest.fixture()
def page_origin():
    """tests/browser served from its own loopback port: another origin than the service and HAPI."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(PAGES)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_a_browser_ehr_on_another_origin_gets_short_cards(tmp_path: Path, hapi_server, page_origin):
    service = ServiceProcess(tmp_path, TRIAL_MATCHER_ALLOWED_FHIR_SERVERS=hapi_server.base)
    try:
        query = urlencode({"service": service.url, "fhir": hapi_server.base, "patient": "demo-bruno"})
        run = subprocess.run(
            ["node", str(PAGES / "sandbox.mjs"), f"{page_origin}/sandbox.html?{query}", str(ARTIFACTS)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        report = httpx.post(f"{service.url}/match", json=_bundle("demo-bruno"), timeout=30).json()
    finally:
        service.stop()
    assert "error" not in seen and not seen["consoleErrors"], seen
    assert seen["discoveryStatus"] == 200 and seen["services"] == 3  # the service's CORS let the page in
    assert set(seen["fhirStatuses"].values()) == {200}  # HAPI's CORS too, every template
    assert seen["hookStatus"] == 200
    expected = {
        t["id"]: t["status"] for t in report["trials"] if t["status"] in ("likely-eligible", "possibly-eligible")
    }
    assert {c["trial"]: c["status"] for c in seen["cards"]} == expected
    assert max(c["detailChars"] for c in seen["cards"]) <= 600
    assert seen["cardsHeight"] < 400 * len(seen["cards"])  # a few lines each, not a page each
    first = next(t for t in report["trials"] if t["id"] == seen["cards"][0]["trial"])
    assert seen["checklistRows"] == len(first["criteria"])  # the rest is one click away
    assert (ARTIFACTS / "sandbox-cards.png").stat().st_size > 10_000


def _bundle(patient: str) -> dict:
    from demo.load import demo_bundles

    return demo_bundles()[patient]
