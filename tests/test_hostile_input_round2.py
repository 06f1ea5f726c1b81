"""Hostile input, round two (issue 23): each test here failed on the code before its fix.

Servers that must never be reached, or whose requests are counted, are real loopback sockets
(tests/servers.py and the small ones below); respx only injects faults into the $export client.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import re
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from helpers import open_service
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from cds_service.api.app import create_app
from cds_service.api.auth import JwksCache
from cds_service.fhir.gather import Gathered, Gatherer
from cds_service.fhir.queries import QUERIES
from cds_service.fhir.urls import AllowList, Origin, UnsafeUrl
from cds_service.screening.export import BulkExport, ExportError
from cds_service.settings import get_settings
from cds_service.views.markdown import md_escape
from tests import test_auth as auth_tests
from tests import test_orders as order_tests
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


# --- 4. JWKS failures are cached, and a slow JWKS holds no request past a bound -------------------------


class FlakyJwks:
    """A real loopback JWKS that counts requests and answers `mode`: ok, 500, or drip (one byte every
    0.2 s for 10 s: each byte resets an HTTP client's read timeout, so only a total bound stops it)."""

    def __init__(self, jwks: dict, mode: str = "ok") -> None:
        self.jwks, self.mode, self.requests, self.closed = jwks, mode, 0, threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                body = json.dumps(outer.jwks).encode() if outer.mode != "500" else b"{}"
                self.send_response(500 if outer.mode == "500" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if outer.mode != "drip" else 50))
                self.end_headers()
                if outer.mode == "drip":
                    for _ in range(50):
                        if outer.closed.wait(0.2):
                            return
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _auth_client(tmp_path, jwks_url: str) -> TestClient:
    issuers = [{"iss": auth_tests.ISS, "jwks_url": jwks_url}]
    return TestClient(create_app(auth_tests._settings(tmp_path, issuers)))


def _good_jwks() -> dict:
    key, alg = auth_tests.KEYS["ec384"]
    return {"keys": [auth_tests.jwk("ec384", alg, key)]}


def test_a_failing_jwks_is_asked_once_per_backoff_and_calls_get_503_not_401(tmp_path):
    server = FlakyJwks(_good_jwks(), mode="500")
    try:
        with _auth_client(tmp_path, server.url) as c:
            answers = [auth_tests.get(c, auth_tests.token()) for _ in range(20)]
        assert server.requests == 1  # the other 19 calls did not hammer the failing JWKS
        assert {r.status_code for r in answers} == {503}
        assert all(int(r.headers["retry-after"]) >= 1 and r.json() == {"error": "authentication unavailable"}
                   for r in answers)  # fmt: skip
    finally:
        server.close()


def test_a_dripping_jwks_holds_no_request_past_the_bound(tmp_path):
    server = FlakyJwks(_good_jwks(), mode="drip")
    try:
        with _auth_client(tmp_path, server.url) as c:
            started = time.monotonic()
            first = auth_tests.get(c, auth_tests.token())
            first_took = time.monotonic() - started
            started = time.monotonic()
            second = auth_tests.get(c, auth_tests.token())
            second_took = time.monotonic() - started
        assert first_took < 3.0 and first.status_code == 503  # the default hook budget; the bound is 2 s
        assert second_took < 0.5 and second.status_code == 503  # the failure is cached: no second wait
        assert server.requests == 1
    finally:
        server.close()


def test_jwks_backoff_doubles_and_the_last_good_keys_serve_through_an_outage():
    async def scenario(server: FlakyJwks) -> tuple[list[int], dict]:
        async with httpx.AsyncClient(timeout=2.0) as client:
            cache = JwksCache(client, ttl=0.0, min_refresh=0.0, failure_backoff=0.4, max_wait=1.0)
            keys = await cache.keys(server.url)  # fetched: good keys
            server.mode = "500"
            counts = []
            for _ in range(8):  # 0.84 s of calls: fetches at 0 and after 0.4 s, then not before 0.8 s more
                served = await cache.keys(server.url)
                assert served == keys  # the outage does not refuse tokens the last good keys verify
                counts.append(server.requests)
                await asyncio.sleep(0.12)
            return counts, keys

    server = FlakyJwks(_good_jwks())
    try:
        counts, keys = asyncio.run(scenario(server))
    finally:
        server.close()
    assert "ec384" in keys
    assert counts[0] == 2 and counts[-1] == 3  # one good fetch, then two failed ones, not eight


# --- 6. hook FHIR reads are capped in decoded bytes, per response and per hook ---------------------------


def _padded_bundle(decoded_bytes: int) -> bytes:
    """A valid empty searchset Bundle padded with whitespace to `decoded_bytes`."""
    head, tail = b'{"resourceType":"Bundle","type":"searchset","entry":[]', b"}"
    return head + b" " * (decoded_bytes - len(head) - len(tail)) + tail


class GzipFhir:
    """A real loopback FHIR server: Patient p1, and every search a Bundle of `search_bytes` decoded bytes,
    sent gzip-encoded (so `observation_bytes` of Observation costs the wire a few kB: a gzip bomb)."""

    def __init__(self, search_bytes: int, observation_bytes: int | None = None) -> None:
        pages = {"search": gzip.compress(_padded_bundle(search_bytes), 9)}
        pages["obs"] = gzip.compress(_padded_bundle(observation_bytes or search_bytes), 9)
        patient = json.dumps({"resourceType": "Patient", "id": "p1", "gender": "female"}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.startswith("/fhir/Patient/"):
                    body, encoded = patient, False
                else:
                    body, encoded = pages["obs" if self.path.startswith("/fhir/Observation") else "search"], True
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                if encoded:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}/fhir"
        self.wire = {k: len(v) for k, v in pages.items()}
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _gather(server: GzipFhir) -> tuple[Gathered, int]:
    """Gather p1 from `server` with the default caps (8 MiB a response, 32 MiB a hook); also the peak
    of Python memory allocated meanwhile (tracemalloc)."""

    async def go() -> Gathered:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False, trust_env=False) as client:
            gatherer = Gatherer(client, AllowList.parse(server.base), 20, 20.0)
            return await gatherer.gather("p1", None, server.base, "tok")

    tracemalloc.start()
    try:
        got = asyncio.run(go())
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_from_the_fhir_server_is_cut_and_counted_as_not_read():
    bomb = 96 * 1024 * 1024
    server = GzipFhir(search_bytes=200, observation_bytes=bomb)
    try:
        got, peak = _gather(server)
    finally:
        server.close()
    assert server.wire["obs"] < 200 * 1024  # what the bomb cost the wire
    assert peak < 24 * 1024 * 1024  # never inflated: 96 MiB decoded would need at least that much
    assert "Observation" not in got.complete  # never "none on record"
    assert "results (Observation) could not be read from the FHIR server" in got.gaps
    assert {"Condition", "Immunization"} <= got.complete  # the small sources were read


def test_the_hook_byte_budget_cuts_sources_past_it_as_gaps():
    server = GzipFhir(search_bytes=6 * 1024 * 1024)  # each search under the 8 MiB cap; the six are not
    try:
        got, _ = _gather(server)
    finally:
        server.close()
    unread = [g for g in got.gaps if "could not be read from the FHIR server" in g]
    assert unread and len(got.complete) <= 5  # 32 MiB holds five 6 MiB searches at most
    sources = {rtype for _, rtype in QUERIES.values()} - {"Patient"}
    assert len(unread) + len(got.complete) == len(sources)  # every source but Patient: read whole, or a gap


# --- 5. and 8. the $export client: bounded downloads, bounded polling ------------------------------------

EXPORT_STATUS = f"{EXPORT_BASE}/$export-poll-status?_jobId=1"


@pytest.fixture
def export_env(monkeypatch):
    """Set TRIAL_MATCHER_EXPORT_* for one test: the CLI reads them through get_settings()."""

    def setenv(**values: object) -> None:
        for k, v in values.items():
            monkeypatch.setenv(f"TRIAL_MATCHER_{k.upper()}", str(v))
        get_settings.cache_clear()

    yield setenv
    get_settings.cache_clear()


def _manifest(*files: tuple[str, str]) -> None:
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": EXPORT_STATUS})
    output = [{"type": t, "url": f"{EXPORT_BASE}/Binary/{name}"} for t, name in files]
    respx.get(EXPORT_STATUS).respond(200, json={"requiresAccessToken": True, "output": output})
    respx.delete(EXPORT_STATUS).respond(202)


def _run_measuring_disk(export: BulkExport, out) -> tuple[BaseException | None, int]:
    """Run the export while a thread samples the bytes on disk under `out` every millisecond; the peak."""
    peak, done = [0], threading.Event()

    def size(path: Path) -> int:
        try:
            return path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # removed between the listing and the look (a cut file is deleted)
            return 0

    def sample() -> None:
        while not done.is_set():
            sizes = [size(p) for p in out.glob("*")] if out.exists() else []
            peak[0] = max(peak[0], sum(sizes))
            time.sleep(0.001)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        asyncio.run(export.run(out))
        error = None
    except ExportError as e:
        error = e
    finally:
        done.set()
        watcher.join()
    return error, peak[0]


@respx.mock
def test_a_gzip_bomb_export_file_is_cut_at_the_file_limit_with_bounded_disk(tmp_path, export_env):
    limit = 1024 * 1024
    export_env(export_max_file_bytes=limit)
    _manifest(("Patient", "1"), ("Observation", "bomb"))
    respx.get(f"{EXPORT_BASE}/Binary/1").respond(200, content=b'{"resourceType":"Patient","id":"p1"}\n')
    bomb = gzip.compress(b'{"resourceType":"Observation"}\n' * (128 * 1024 * 1024 // 31), 9)
    respx.get(f"{EXPORT_BASE}/Binary/bomb").respond(200, content=bomb, headers={"Content-Encoding": "gzip"})
    export = BulkExport(EXPORT_BASE, "tok")
    error, peak = _run_measuring_disk(export, tmp_path / "export")
    assert len(bomb) < 1024 * 1024  # under a megabyte on the wire, 128 MiB decoded
    assert peak <= limit + 4096  # measured: the bomb never reached the disk
    assert error is not None and "Observation.001.ndjson over the 1048576-byte file limit" in str(error)
    assert export.cut == ["Observation.001.ndjson over the 1048576-byte file limit"]
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["Patient.000.ndjson"]  # the cut file is gone


@respx.mock
def test_export_files_are_cut_at_the_total_limit_and_the_cut_is_reported(tmp_path, export_env):
    export_env(export_max_file_bytes=1024 * 1024, export_max_total_bytes=1024 * 1024)
    _manifest(*[("Observation", str(i)) for i in range(3)])
    line = b'{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}\n'
    for i in range(3):
        respx.get(f"{EXPORT_BASE}/Binary/{i}").respond(200, content=line * (600 * 1024 // len(line)))
    export = BulkExport(EXPORT_BASE, "tok")
    error, peak = _run_measuring_disk(export, tmp_path / "export")
    assert peak <= 1024 * 1024
    assert error is not None and "total limit" in str(error) and "not screened" in str(error)
    assert export.cut and all("over the 1048576-byte total limit" in c for c in export.cut)


@respx.mock
def test_retry_after_zero_is_polled_at_the_minimum_interval_until_the_deadline(tmp_path, export_env):
    export_env()  # the defaults: polls at least 1 s apart
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": EXPORT_STATUS})
    polls = respx.get(EXPORT_STATUS).respond(202, headers={"Retry-After": "0"})
    started = time.monotonic()
    with pytest.raises(ExportError, match="did not finish within 2 s"):
        asyncio.run(BulkExport(EXPORT_BASE, None, timeout=2.5).run(tmp_path))
    assert polls.call_count <= 3  # at 0, 1 and 2 s: not thousands a second
    assert time.monotonic() - started < 4.0


@respx.mock
def test_the_export_deadline_and_minimum_poll_interval_are_settings(tmp_path, export_env, monkeypatch):
    export_env(export_min_poll_seconds=5, export_timeout_seconds=1)
    respx.get(url__regex=r"/fhir/\$export\?_type=").respond(202, headers={"Content-Location": EXPORT_STATUS})
    respx.get(EXPORT_STATUS).respond(202, headers={"Retry-After": "0"})
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)
        if len(slept) > 3:
            await real_sleep(10)  # the deadline (1 s of real time) must end this, not the test

    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    export = BulkExport(EXPORT_BASE, None, max_poll_seconds=2)
    assert export.timeout == 1 and export.max_poll_seconds == 5  # the floor wins over a smaller cap
    with pytest.raises(ExportError, match="did not finish within 1 s"):
        asyncio.run(export.run(tmp_path))
    assert slept[:3] == [5, 5, 5]


# --- 7. the JWT is checked before the body is read -----------------------------------------------------


def _jwks_file_settings(tmp_path, **over):
    (tmp_path / "jwks.json").write_text(json.dumps(_good_jwks()))
    return auth_tests._settings(tmp_path, [{"iss": auth_tests.ISS, "jwks_file": str(tmp_path / "jwks.json")}], **over)


def _post_chunked(app, authorization: bytes | None, chunks: int = 64, size: int = 64 * 1024) -> tuple[int, int]:
    """POST a chunked body straight to the ASGI app; (status, body chunks the app pulled from the client)."""
    pulled, sent = [0], []
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    if authorization:
        headers.append((b"authorization", authorization))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/cds-services/trial-matcher", "raw_path": b"/cds-services/trial-matcher", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict:
        if pulled[0] >= chunks:
            await asyncio.sleep(3600)  # a client that sends no more: only an app waiting for it gets here
        pulled[0] += 1
        return {"type": "http.request", "body": b" " * size, "more_body": pulled[0] < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled[0]


@pytest.mark.parametrize("authorization", [None, b"Bearer not-a-jwt", b"Basic eDp5"])
def test_an_unauthenticated_post_is_refused_before_its_body_is_read(tmp_path, authorization):
    app = create_app(_jwks_file_settings(tmp_path))
    status, pulled = _post_chunked(app, authorization)
    assert status == 401
    assert pulled == 0  # not one chunk of the 4 MiB body was read for a caller without a valid JWT


def test_an_authenticated_body_over_the_limit_is_still_413(tmp_path):
    settings = _jwks_file_settings(tmp_path, max_body_bytes=256 * 1024)
    path = "/cds-services/trial-matcher"

    def chunks():
        for _ in range(16):
            yield b" " * (64 * 1024)

    with TestClient(create_app(settings)) as c:
        headers = {"Authorization": f"Bearer {auth_tests.token(path)}", "Content-Type": "application/json"}
        r = c.post(path, content=chunks(), headers=headers)
        assert r.status_code == 413 and r.json() == {"error": "request body larger than 262144 bytes"}
        headers["Authorization"] = f"Bearer {auth_tests.token(path)}"
        assert c.post(path, content=b"{}", headers=headers).status_code == 400  # under it: read and parsed


# --- 12. /admin/feedback paging past any stored id is a 400, not a 500 ---------------------------------


@pytest.mark.parametrize("before", ["1e23", str(10**23), str(2**63), "-1", "1.5"])
def test_admin_feedback_before_out_of_range_is_400(tmp_path, before):
    admin = {"Authorization": "Bearer admin-secret"}
    with make_client(tmp_path, admin_token="admin-secret") as c:
        r = c.get("/admin/feedback", params={"before": before}, headers=admin)
        assert r.status_code == 400 and "before" in r.text and before not in r.text
        assert c.get("/admin/feedback", params={"before": str(2**63 - 1)}, headers=admin).status_code == 200


# --- 17. draft-order ids and subjects are checked -----------------------------------------------------

RITUXIMAB = ("121191", "riTUXimab 10 MG/ML Injectable")  # closes three trials for the eligible patient


@pytest.fixture(scope="module")
def order_client(tmp_path_factory):
    with open_service(tmp_path_factory.mktemp("orders2"), as_of=order_tests.AS_OF) as c:
        yield c


def _draft(oid: str = "draft-1", subject: object = None) -> dict:
    res = order_tests.med_order(order_tests.RXNORM, *RITUXIMAB, oid=oid)
    if subject is not None:
        res["subject"] = subject
    return res


def test_a_draft_for_the_context_patient_warns(order_client):
    """The control: the same draft, for p1, gives warning cards naming it."""
    cards = order_tests.call(order_client, "order-sign", [_draft()])
    assert cards and {a["resourceId"] for c in cards for s in c["suggestions"] for a in s["actions"]
                      if a["type"] == "delete"} == {"MedicationRequest/draft-1"}  # fmt: skip


@pytest.mark.parametrize(
    "oid", ["../../Patient/x", "a/b", "x" * 65, "draft 1", "draft%2F1", ""], ids=lambda v: v[:12] or "empty"
)
def test_draft_orders_with_ids_that_are_not_fhir_ids_are_ignored(order_client, oid):
    cards = order_tests.call(order_client, "order-sign", [_draft(oid)])
    assert cards == []  # before: cards whose delete action named MedicationRequest/../../Patient/x


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/someone-else"},
        {"reference": "Patient/p1/../someone-else"},
        {"reference": "Group/p1"},
        {"reference": "https://other.example/fhir/Patient/p1"},
        {"identifier": {"value": "p1"}},
        {},
    ],
    ids=["other-patient", "dot-segments", "group", "absolute", "identifier-only", "empty"],
)
def test_a_draft_for_another_patient_gets_no_warning(order_client, subject):
    assert order_tests.call(order_client, "order-sign", [_draft(subject=subject)]) == []
    assert order_tests.call(order_client, "order-select", [_draft(subject=subject)]) == []


# --- 18. FHIR display text is inert Markdown ---------------------------------------------------------------

HOSTILE_DISPLAYS = [
    "https://evil.example/login",
    "see http://x.example and HTTPS://Y.example",
    "www.evil.example/x",
    "_www.evil.example_ and (www.evil.example)",
    "mail admin@evil.example",
    "javascript:alert(1)",
    "1. Stop all other medication",
    "2) then this",
    "---",
    "***",
    "___",
    "=====",
    "# Heading",
    "###### six",
    "> quoted",
    "- bullet",
    "+ plus",
    "* star",
    "first line\nsecond line",
    "item\n\n1. new list\n---\n# heading",
    "line\r\nbreak\u2028and\u2029more\x85end",
    "    indented code",
    "**bold** _em_ `code` ~~gone~~",
    "[click](https://evil.example) ![img](https://evil.example/x.png)",
    "<script>alert(1)</script> <b>b</b>",
    "&lt;not a tag&gt; &amp; &#65;",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "[^1] footnote and [ref]\n\n[ref]: https://evil.example",
    "<https://evil.example>",
    "trailing backslash \\",
    "```\nfence\n```",
    "a\\*b",
]


def _shown(text: str) -> str:
    """What a reader should see: the text on one line, an invisible word joiner after each `@`."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text).split()).replace("@", "@\u2060")


def _render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def _one_plain_item(text: str) -> str:
    """The text of the single bullet `- md_escape(text)` renders to; fails if it renders any other markup."""
    rendered = _render(f"- {md_escape(text)}\n")
    assert rendered.startswith("<ul>\n<li>") and rendered.endswith("</li>\n</ul>\n"), rendered
    inner = rendered[len("<ul>\n<li>") : -len("</li>\n</ul>\n")]
    assert "<" not in inner, rendered  # no element at all: no link, heading, list, rule, emphasis, code, HTML
    return html.unescape(inner)


@pytest.mark.parametrize("text", HOSTILE_DISPLAYS)
def test_md_escape_renders_as_the_text_itself_in_one_item(text):
    assert _one_plain_item(text) == _shown(text)


@pytest.mark.parametrize("text", HOSTILE_DISPLAYS)
def test_md_escape_is_inert_at_the_start_of_a_line_after_a_paragraph_and_inside_bold(text):
    safe = md_escape(text)
    for markdown, strong in ((safe, 0), (f"**Note:** {safe}.", 1), (f"Intro\n{safe}", 0)):
        rendered = _render(markdown + "\n")
        assert rendered.count("<p>") == 1 and rendered.count("<strong>") == strong, (text, rendered)
        assert "<" not in re.sub(r"</?(p|strong)>", "", rendered), (text, rendered)  # one paragraph, nothing else


def test_md_escape_breaks_every_gfm_autolink_trigger():
    """GitHub's autolink extension links `scheme:`, `www.` and `a@b.c` in plain text; each is broken."""
    assert md_escape("https://x.example") == "https\\://x.example"
    assert md_escape("WWW.x.example") == "WWW\\.x.example"
    assert md_escape("a@b.example") == "a@\u2060b.example"  # an escaped @ is still linked: see below
    assert md_escape("javascript:alert(1)") == "javascript\\:alert\\(1\\)"


def test_md_escape_links_nothing_in_githubs_own_renderer():
    """cmark-gfm is GitHub's renderer (not installed by default: `pip install cmarkgfm` runs this)."""
    cmarkgfm = pytest.importorskip("cmarkgfm")
    for text in HOSTILE_DISPLAYS + ["x@y.z, www.a.b.", "a_b http://x.example/a_b"]:
        rendered = cmarkgfm.github_flavored_markdown_to_html(f"- {md_escape(text)}\n")
        assert re.fullmatch(r"<ul>\n<li>[^<]*</li>\n</ul>\n", rendered), (text, rendered)


def test_md_escape_leaves_plain_text_alone():
    assert md_escape("Hydroxychloroquine 200 mg, twice daily") == "Hydroxychloroquine 200 mg, twice daily"
    assert md_escape("  spaced   out  ") == "spaced out"


@given(st.text(max_size=200))
@settings(max_examples=400, deadline=None)
def test_md_escape_never_renders_markup_whatever_the_text(text):
    assert _one_plain_item(text) == _shown(text)
