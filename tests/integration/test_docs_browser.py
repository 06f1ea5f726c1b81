"""The API docs render in real headless Chromium with no host but the service reachable: Swagger UI is served by
the service itself (fastapi-offline), not loaded from a CDN a hospital network may block. No ReDoc page: it
fetched its maker's logo from another host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from bench.service import ServiceProcess

from .test_browser import _missing

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_the_api_docs_render_without_the_internet(tmp_path):
    service = ServiceProcess(tmp_path)
    try:
        paths = httpx.get(f"{service.url}/openapi.json", timeout=10).json()["paths"]
        operations = sum(len(ops) for ops in paths.values())
        run = subprocess.run(["node", str(ROOT / "tests" / "browser" / "docs.mjs"), service.url],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        service.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["elsewhere"] == []  # nothing was asked of another host
    assert seen["swaggerTitle"].startswith("trial-matcher") and seen["swaggerOperations"] == operations
    assert seen["redocStatus"] == 404
