"""Attack on the session's changes (3f268df..HEAD): lazy CLI areas, settings errors, uvicorn's JSON log lines,
the offline /docs, import/diff refusals, discovery usage, /readyz, the worklist note.

The tests whose docstrings start "Was a fault" failed on the code attacked (each says what was wrong and why it
mattered) and hold since the fixes; the others are regressions that held under attack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.api.app import create_app
from cds_service.cli import build_parser, main
from cds_service.settings import Settings, get_settings, settings_errors
from cds_service.worklist.changes import AGED_OUT, compare
from cds_service.worklist.runs import StoredRow

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
D1, D2 = date(2026, 11, 1), date(2026, 11, 23)
RECORDS = sorted((ROOT / "tests" / "fixtures" / "ctgov").glob("*.json"))


# ---------------------------------------------------------------------------------------------------------------
# helpers: a real `serve` process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAL_MATCHER_")}
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(ROOT),
        TRIAL_MATCHER_AUTH_REQUIRED="false",
        TRIAL_MATCHER_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def _serving(tmp_path: Path, **extra: str) -> Iterator[tuple[int, Path]]:
    """`python -m cds_service serve` on a free port; yields (port, its stderr file). Stopped on exit."""
    port = _free_port()
    err = tmp_path / f"serve-{port}.err"
    with err.open("wb") as f:
        proc = subprocess.Popen(
            [PY, "-m", "cds_service", "serve", "--port", str(port)],
            env=_env(tmp_path, **extra),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=f,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("serve did not start: " + err.read_text()[-2000:]) from None
                time.sleep(0.2)
        yield port, err
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        try:
            return s.recv(4096)
        except OSError:
            return b""


def _ws_upgrade(path: str, extra_headers: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + extra_headers
        + b"\r\n"
    )


def _lines(err: Path) -> list[str]:
    time.sleep(0.3)  # the log line of the last request
    return [line for line in err.read_text(errors="replace").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# 3. uvicorn's own log lines as JSON (faults found here, fixed)


def test_a_websocket_upgrade_keeps_its_path_and_query_string_out_of_the_log(tmp_path):
    """Was a fault (high). ServerFormatter renders uvicorn's arguments on the premise that uvicorn "builds them from its
    configuration, never from a request". But uvicorn's websocket protocol logs, at INFO on the `uvicorn.error`
    logger, `'%s - "WebSocket %s" 403'` with the request's path AND query string. The app has no websocket
    route, so any upgrade request is refused with exactly that line: `GET /match?patient=<id>` (or
    `/checklist/<live token>`, or `?access_token=...`) with `Upgrade: websocket` writes the patient id or token
    to the service log at the default level. The service's own request log deliberately logs the route
    template without the query string; this line undoes it."""
    secret_patient, secret_token = "PATIENT-4711-SECRET", "ACCESS-TOKEN-SECRET"
    with _serving(tmp_path, TRIAL_MATCHER_LOG_LEVEL="INFO") as (port, err):
        _raw(port, _ws_upgrade(f"/match?patient={secret_patient}&access_token={secret_token}"))
        _raw(port, _ws_upgrade("/checklist/CHECKLIST-TOKEN-SECRET"))
        lines = _lines(err)
    leaked = [line for line in lines if "SECRET" in line]
    assert all(line.startswith("{") for line in lines)
    assert not leaked, f"request content in the INFO log: {leaked}"


def test_the_debug_log_writes_no_header_of_a_websocket_upgrade(tmp_path):
    """Was a fault (high at DEBUG). With TRIAL_MATCHER_LOG_LEVEL=DEBUG, uvicorn hands its `uvicorn.error` logger to the
    websockets library, which logs the request line and every request header (`< authorization: Bearer ...`,
    `< cookie: ...`) of any upgrade attempt, one record each; ServerFormatter now renders them in full. A
    client's JWT or session cookie lands in the log. DEBUG is a documented Python log level for this setting."""
    with _serving(tmp_path, TRIAL_MATCHER_LOG_LEVEL="DEBUG") as (port, err):
        _raw(
            port,
            _ws_upgrade("/cds-services", b"Authorization: Bearer BEARER-JWT-SECRET\r\nCookie: s=COOKIE-SECRET\r\n"),
        )
        lines = _lines(err)
    leaked = [line for line in lines if "SECRET" in line]
    assert not leaked, f"headers in the DEBUG log: {leaked}"


def test_the_trace_log_level_is_refused(tmp_path):
    """TRIAL_MATCHER_LOG_LEVEL=TRACE was accepted (uvicorn registers the level) and turned on uvicorn's message
    logger, whose `ASGI [n] Started scope=...` line holds each request's query string: `/match?patient=<id>`
    put the patient id in the log. The setting now takes the standard levels only."""
    proc = subprocess.run([PY, "-m", "cds_service", "serve", "--port", str(_free_port())],
                          env=_env(tmp_path, TRIAL_MATCHER_LOG_LEVEL="TRACE"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "setting TRIAL_MATCHER_LOG_LEVEL" in proc.stderr, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr


def test_a_port_in_use_is_logged_with_its_reason(tmp_path):
    """Was a fault (medium). uvicorn reports a failed bind with `logger.error(exc)`: record.msg is the OSError, not a
    str, so ServerFormatter writes `"msg": "log"` and drops the reason. The most common start-up failure of
    `serve` (port taken, address not available, permission denied below 1024) now reads `ERROR log` with exit
    status 3; uvicorn's default formatter said `[Errno 98] ... address already in use`."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [PY, "-m", "cds_service", "serve", "--port", str(port)],
            env=_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    errors = [json.loads(line) for line in proc.stderr.splitlines() if '"level": "ERROR"' in line]
    assert proc.returncode != 0 and errors
    assert any(e["msg"] != "log" for e in errors), f"the bind failure says only: {errors}"


def test_a_start_up_failure_logs_its_exception_type_not_its_traceback(tmp_path):
    """Was a fault (medium). ServerFormatter promises that "an exception keeps only its type". A start-up error in the
    app's lifespan is sent to uvicorn by Starlette as `lifespan.startup.failed` with the formatted traceback
    as its *message*, which uvicorn logs as a plain string: the JSON line's msg is the full multi-line
    traceback (source lines, file paths, the exception's own text, here the configured database path). Any
    lifespan exception whose message quotes a setting or input reaches the log whole."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run(
        [PY, "-m", "cds_service", "serve", "--port", str(_free_port())],
        env=_env(tmp_path, TRIAL_MATCHER_DATABASE_URL=f"sqlite:///{blocker}/DB-PATH-SECRET/x.sqlite3"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    msgs = [json.loads(line)["msg"] for line in proc.stderr.splitlines() if line.startswith("{")]
    assert not [m for m in msgs if "Traceback" in m or "DB-PATH-SECRET" in m], "a traceback in a log line's msg"


def test_bad_requests_keep_their_content_out_of_the_log_and_every_line_is_json(tmp_path):
    """Held: malformed request lines, NUL bytes, a 100 kB path, a bad header name and an h2c upgrade give
    uvicorn's fixed lines only (`Invalid HTTP request received.`, `Unsupported upgrade request.`)."""
    with _serving(tmp_path, TRIAL_MATCHER_LOG_LEVEL="DEBUG") as (port, err):
        _raw(port, b"GET /x?BADREQ-SECRET\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
        _raw(port, b"GET /" + b"A" * 100_000 + b"HUGE-SECRET HTTP/1.1\r\nHost: x\r\n\r\n")
        _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: HDR-SECRET\r\n\r\n")
        _raw(port, b"GET /healthz?H2C-SECRET HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n")
        _raw(port, b"FOO /METHOD-SECRET HTTP/1.1\r\nHost: x\r\n\r\n")
        lines = _lines(err)
    for line in lines:
        json.loads(line)
    assert not [line for line in lines if "SECRET" in line]
    assert any("Invalid HTTP request received." in line for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# 2. settings errors: one line, exit 2, no value echoed


@pytest.fixture
def no_uvicorn(monkeypatch):
    """`serve` must stop before uvicorn: if it gets that far, the test fails instead of serving."""
    import uvicorn

    def refuse(*_a, **_k):
        raise AssertionError("uvicorn.run reached")

    monkeypatch.setattr(uvicorn, "run", refuse)
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "issuers", ["null", "0", "true", "[" * 100_000 + "]" * 100_000], ids=["null", "zero", "true", "deep"]
)
def test_trusted_issuers_that_is_json_but_not_a_list_is_one_line(issuers, monkeypatch, capsys, no_uvicorn):
    """Was a fault (medium). `auth_problem` catches only ValueError around `self.issuers`. TRUSTED_ISSUERS=null, 0 or
    true is valid JSON that is not iterable (TypeError), and a deeply nested list raises RecursionError: `serve`
    dies with a Python traceback and exit 1 instead of the promised one line and exit 2 (the app factory, run
    by uvicorn alone, raises the same way)."""
    monkeypatch.setenv("TRIAL_MATCHER_AUTH_REQUIRED", "true")
    monkeypatch.setenv("TRIAL_MATCHER_PUBLIC_URL", "https://cds.example.org")
    monkeypatch.setenv("TRIAL_MATCHER_TRUSTED_ISSUERS", issuers)
    get_settings.cache_clear()
    try:
        rc = main(["serve"])
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"serve raised {type(e).__name__} (a traceback, exit 1)")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "TRUSTED_ISSUERS" in err


def test_an_issuer_with_no_key_source_fails_the_start_up_check():
    """Was a fault (low). auth_problem's own message says an issuer is {"iss", "jwks_url" | "jwks_file"}, yet
    `[{"iss": "https://ehr"}]` passes: the service starts and then answers every call from that EHR 401
    ("no keys configured for issuer"), which the EHR reads as its own token being wrong."""
    s = Settings(
        auth_required=True, public_url="https://cds.example.org", trusted_issuers=json.dumps([{"iss": "https://ehr"}])
    )
    assert s.auth_problem() is not None


@pytest.mark.parametrize(
    "setting",
    [
        "TRIAL_MATCHER_ALLOWED_FHIR_SERVERS=ftp://fhir.example.org",
        "TRIAL_MATCHER_LOG_LEVEL=verbose",
    ],
    ids=["allow-list", "log-level"],
)
def test_a_bad_allow_list_or_log_level_is_one_line_before_uvicorn(setting, tmp_path):
    """Was a fault (medium). Commit 1005645 says any setting that does not parse is one line and exit 2. The allow-list
    is parsed only inside the app factory (uvicorn prints the factory's exception as a traceback, exit 1), and
    an unknown TRIAL_MATCHER_LOG_LEVEL now fails in logging.dictConfig (server_log_config) with a traceback."""
    key, value = setting.split("=", 1)
    proc = subprocess.run(
        [PY, "-m", "cds_service", "serve", "--port", str(_free_port())],
        env=_env(tmp_path, **{key: value}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-600:]


def test_with_workers_a_bad_allow_list_stops_serve_at_once(tmp_path):
    """Was a fault (medium). `serve --workers 2` with a malformed TRIAL_MATCHER_ALLOWED_FHIR_SERVERS: every worker's
    app factory raises, uvicorn's supervisor restarts it, and the process never exits, writing a non-JSON
    multiprocessing traceback about every second (24 tracebacks in 12 s here) instead of one line and exit 2.
    A container restart policy never even sees a failure."""
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "cds_service", "serve", "--port", str(port), "--workers", "2"],
        env=_env(tmp_path, TRIAL_MATCHER_ALLOWED_FHIR_SERVERS="ftp://fhir.example.org"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        pytest.fail(f"still running after 8 s; {err.count('Traceback')} tracebacks written")
    assert proc.returncode == 2 and "Traceback" not in err


def test_settings_errors_name_the_variable_and_never_echo_the_value(monkeypatch):
    """Held: for every Settings field and a range of bad values, the lines name TRIAL_MATCHER_<FIELD> and never
    contain the value given; nothing but a ValidationError is raised (no SettingsError: no complex fields)."""
    bad = ["SECRETzz", "1e999", "-1", "9" * 30, "nan", "2024-13-45SECRET", '["SECRET"]', '{"a": "SECRET"}', " "]
    for name in Settings.model_fields:
        for value in bad:
            monkeypatch.setenv(f"TRIAL_MATCHER_{name.upper()}", value)
            try:
                Settings()
            except Exception as e:  # noqa: BLE001
                lines = settings_errors(e)
                assert lines, (name, value, type(e).__name__)
                for line in lines:
                    assert line.startswith(f"TRIAL_MATCHER_{name.upper()}: ")
                    assert "SECRET" not in line and (not value.strip() or value not in line.split(": ", 1)[1])
            monkeypatch.delenv(f"TRIAL_MATCHER_{name.upper()}")


def test_a_bad_setting_is_one_line_and_exit_2_for_any_command(monkeypatch, capsys, no_uvicorn):
    monkeypatch.setenv("TRIAL_MATCHER_PORT", "SECRET-PORT")
    monkeypatch.setenv("TRIAL_MATCHER_WORKLIST_PATIENT_IDS", "SECRET-MODE")
    for command in (["serve"], ["trials"], ["lint"]):
        get_settings.cache_clear()
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "SECRET" not in err and "Traceback" not in err
        assert err.count(f"{command[0]}: setting TRIAL_MATCHER_") == 2 and len(err.strip().splitlines()) == 2


# ---------------------------------------------------------------------------------------------------------------
# 1. the CLI's lazy areas


def test_top_level_help_with_a_command_after_it_lists_every_command(capsys):
    """Was a fault (low). `trial-matcher -h screen` (or `--help lint`) prints the top-level help, which is meant to be
    the full one, but build_parser takes `screen` for the command and adds only its area: lint, import, diff,
    worklist and screening-log are missing from the list of commands (`-- screen` likewise tells the user
    the choices are evaluate, trials, coverage, serve and screen)."""
    with pytest.raises(SystemExit) as done:
        main(["-h", "screen"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    missing = [c for c in ("lint", "import", "diff", "worklist", "screening-log") if c not in out]
    assert not missing, f"top-level help without {missing}"


def _commands(argv: list[str]) -> set[str]:
    parser = build_parser(argv)
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_each_command_gets_its_area_and_a_typo_or_help_gets_every_command(capsys):
    """Held: a command gets its own area (with its options after it, any order), a typo or nothing gets all."""
    core = {"evaluate", "trials", "coverage", "serve"}
    every = core | {"lint", "import", "diff", "screen", "worklist", "screening-log"}
    assert _commands(["screen", "--out", "lint", "x"]) == core | {"screen"}  # a command name as a value
    assert _commands(["diff", "NCT06010472", "--against", "worklist"]) == core | {"lint", "import", "diff"}
    assert _commands(["screening-log", "-h"]) == core | {"worklist", "screening-log"}
    assert _commands(["evaluate", "screen.json"]) == core
    for argv in (["-h"], [], ["scr"], ["lin"], [""], ["--help"]):
        assert _commands(argv) == every, argv
    for argv in (["scr"], ["lin"], []):  # no abbreviation, and a usage error: exit 2, no traceback
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_python_m_cds_service_without_arguments_is_a_usage_error(tmp_path):
    proc = subprocess.run([PY, "-m", "cds_service"], env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "required: command" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# 4. the offline /docs


@pytest.fixture
def authed_app(tmp_path):
    s = Settings(
        auth_required=True,
        public_url="https://cds.example.org",
        trusted_issuers=json.dumps([{"iss": "https://ehr.example.com", "jwks_url": "http://127.0.0.1:9/jwks"}]),
        database_url=f"sqlite:///{tmp_path / 'docs.sqlite3'}",
    )
    with TestClient(create_app(s)) as client:
        yield client


def test_docs_are_offline_and_protected_endpoints_stay_protected(authed_app):
    """Held: /docs loads only same-origin files, /redoc is gone, the static mount does not traverse, and the CDS
    Hooks endpoints and /match still answer 401 without a token."""
    c = authed_app
    page = c.get("/docs").text
    assert "http://" not in page and "https://" not in page and "/static-offline-docs/swagger-ui-bundle.js" in page
    assert c.get("/redoc").status_code == 404
    css = c.get("/static-offline-docs/swagger-ui.css")
    assert css.status_code == 200 and "@import" not in css.text  # no web font
    assert re.findall(r'url\(\s*"?([a-z]+):', css.text) and set(re.findall(r'url\(\s*"?([a-z]+):', css.text)) == {
        "data"
    }
    assert c.get("/static-offline-docs/favicon.png").status_code == 200
    for path in ("/static-offline-docs/../core.py", "/static-offline-docs/%2e%2e/core.py",
                 "/static-offline-docs/..%2fcore.py", "/static-offline-docs/..%5ccore.py",
                 "/static-offline-docs/%2e%2e/%2e%2e/settings.py", "/static-offline-docs/" + "a" * 20_000):  # fmt: skip
        assert c.get(path).status_code == 404, path
    for method in ("PUT", "DELETE", "PATCH"):
        assert c.request(method, "/static-offline-docs/favicon.png").status_code == 405
    for method, path in (("GET", "/cds-services"), ("HEAD", "/cds-services"), ("GET", "/cds-services/"),
                         ("POST", "/cds-services/trial-matcher"), ("GET", "/match?patient=x"),
                         ("GET", "/static-offline-docs/../cds-services")):  # fmt: skip
        assert c.request(method, path).status_code == 401, (method, path)


# ---------------------------------------------------------------------------------------------------------------
# 5. import and diff


def test_import_reads_a_json_record_with_a_byte_order_mark(trials_dir, tmp_path, capsys):
    """Was a fault (low). A study record saved with a UTF-8 BOM (Windows Notepad, PowerShell 5 `Out-File`) is a JSON
    record, but `raw.lstrip()` does not strip U+FEFF, so import answers NOT_A_RECORD: "not a JSON study
    record ... a saved registry page is a trial's source". Before, the message named the BOM; now it tells
    the user the file is something it is not (diff still says "Unexpected UTF-8 BOM")."""
    record = tmp_path / "bom.json"
    record.write_text(RECORDS[0].read_text(encoding="utf-8"), encoding="utf-8-sig")
    rc = main(["import", str(record), "--out", str(tmp_path / "out" / "x.yaml")])
    err = capsys.readouterr().err
    assert rc == 0 or "not a JSON study record" not in err, err


def test_diff_refuses_another_trials_page_that_mentions_this_trial(trials_dir, tmp_path, capsys):
    """Was a fault (low). diff takes a .txt page for trial T when T is *any* NCT id the page names. The saved page of
    NCT06801119 with one line naming NCT06010472 (an extension study's "participants of NCT... excluded", a
    related-study reference) is diffed as NCT06010472's page: every criterion is reported as no longer in the
    registry text, the very outcome the refusal exists to prevent. The page names its own id in its
    'Clinical Study ID' field; any id elsewhere is a reference, not the record it is."""
    page = (trials_dir / "sources" / "NCT06801119.txt").read_text()
    other = tmp_path / "other.txt"
    other.write_text(page + "\nParticipants previously enrolled in NCT06010472 are excluded.\n")
    rc = main(["diff", "NCT06010472", "--against", str(other)])
    captured = capsys.readouterr()
    assert rc == 2 and "registry record of" in captured.err, f"exit {rc}, {captured.out.count(chr(10))} lines"


def test_diff_and_import_refusals_that_held(trials_dir, tmp_path, capsys):
    """Held: another trial's JSON record is refused whatever its suffix; leading whitespace before a record is
    accepted; a list, deep nesting and non-UTF-8 are one line, exit 2, no traceback."""
    other = json.loads(RECORDS[0].read_text())["protocolSection"]["identificationModule"]["nctId"]
    upper = tmp_path / "REC.JSON"
    upper.write_text(RECORDS[0].read_text())
    assert main(["diff", "NCT06010472", "--against", str(upper)]) == 2
    assert f"registry record of {other}, not NCT06010472" in capsys.readouterr().err
    spaced = tmp_path / "spaced.json"
    spaced.write_text("\n \t" + RECORDS[0].read_text())
    assert main(["import", str(spaced), "--out", str(tmp_path / "o" / "y.yaml")]) in (0, 1)
    capsys.readouterr()
    cases = {"list.json": "[1, 2]", "deep.json": '{"a":' * 50_000 + "1" + "}" * 50_000}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin.txt").write_bytes(b"\xff\xfe NCT06010472")
    for argv in (["import", str(tmp_path / "list.json")], ["import", str(tmp_path / "deep.json")],
                 ["diff", "NCT06010472", "--against", str(tmp_path / "deep.json")],
                 ["diff", "NCT06010472", "--against", str(tmp_path / "latin.txt")]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------------------------
# 6. discovery usage, /readyz, the worklist note


def test_discovery_usage_names_every_type_the_templates_read():
    from cds_service.api.routes.cds_hooks import services
    from cds_service.fhir.queries import QUERIES

    for service in services(frozenset({("http://loinc.org", "718-7")})):
        if service.hook == "order-select":
            continue
        for rtype in {t for _, t in QUERIES.values()} | {"Medication"}:
            assert re.search(rf"[ ,]{rtype}[,. ]", service.usageRequirements), rtype


def test_readyz_names_a_left_out_trial_file_without_its_folder(tmp_path):
    trials = tmp_path / "deploy-secret-layout" / "trials"
    shutil.copytree(ROOT / "trials", trials)
    (trials / "NCT00000001.yaml").write_text("id: NCT00000001\ncriteria: [\n")
    (trials / "NCT00000002.yaml").write_text("id: NCT00000003\ntitle: x\n")
    s = Settings(auth_required=False, trials_dir=trials, database_url=f"sqlite:///{tmp_path / 'r.sqlite3'}")
    with TestClient(create_app(s)) as c:
        ready = c.get("/readyz").json()
    problems = ready["trial_file_problems"]
    assert any(p.startswith("NCT00000001.yaml:") for p in problems)
    assert any(p.startswith("NCT00000002.yaml:") for p in problems)
    assert "deploy-secret-layout" not in json.dumps(ready)


def _row(status: str, failed: str, unknowns: str, run: int) -> StoredRow:
    return StoredRow(run, run, "p1", "T1", status, None, failed, unknowns, "")


def test_worklist_note_names_an_aged_out_criterion_that_was_not_the_first_failure():
    """Was a fault (medium). The AGED_OUT note is set only when the *first* previously failed criterion is now unknown.
    A patient who failed inc-2 and exc-5, and now meets inc-2 while exc-5's result has aged out of its window
    (unknown, never a fail), is listed newly eligible naming inc-2 with no note: the coordinator is not told
    that an exclusion that kept the patient out is now merely unverified, which is what the note is for."""
    before = {("p1", "T1"): _row("ineligible", "inc-2;exc-5", "", 1)}
    now = {("p1", "T1"): _row("possibly-eligible", "", "exc-5", 2)}
    (entry,) = compare(now, before, D2, D1, 30)
    assert entry.list == "newly-eligible"
    assert entry.note == AGED_OUT, f"criterion {entry.criterion!r}, note {entry.note!r}"


def test_worklist_note_when_the_failed_criterion_is_now_unknown_or_met():
    before = {("p1", "T1"): _row("ineligible", "exc-5", "", 1)}
    for unknowns, note in (("inc-1;exc-5", AGED_OUT), ("inc-1", ""), ("", ""), ("exc-50", "")):
        (entry,) = compare({("p1", "T1"): _row("likely-eligible", "", unknowns, 2)}, before, D2, D1, 30)
        assert (entry.criterion, entry.note) == ("exc-5", note), unknowns
    (entry,) = compare({("p1", "T1"): _row("likely-eligible", "", "", 2)}, {}, D2, None, 30)  # new to the cohort
    assert (entry.criterion, entry.note) == ("", "")
