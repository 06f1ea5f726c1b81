"""Working with the CDS Hooks sandbox out of the box: CORS and discovery's prefetch templates.

With authentication off (`scripts/serve.sh`; a sandbox cannot sign with a key the service trusts), pages
on this machine (a local sandbox, any port) may call the service and nothing else may, unless
TRIAL_MATCHER_CORS_ORIGINS names it (the public sandbox). With authentication on, any origin (bearer
tokens, not cookies, carry authority)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import open_service

from cds_service.fhir.codes import LOINC

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


def preflight(client, origin: str):
    return client.options("/cds-services/trial-matcher", headers={"Origin": origin, **PREFLIGHT})


@pytest.mark.parametrize("origin", ["http://127.0.0.1:3000", "http://localhost:8080", "http://[::1]:5173"])
def test_a_local_sandbox_may_call_with_auth_off(tmp_path, origin):
    with open_service(tmp_path) as c:
        r = preflight(c, origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        got = c.get("/cds-services", headers={"Origin": origin})
        assert got.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["https://sandbox.cds-hooks.org", "http://127.0.0.1.evil.example", "null"])
def test_no_other_site_by_default_with_auth_off(tmp_path, origin):
    with open_service(tmp_path) as c:
        assert "access-control-allow-origin" not in preflight(c, origin).headers


def test_one_variable_lets_the_public_sandbox_in(tmp_path):
    with open_service(tmp_path, cors_origins="https://sandbox.cds-hooks.org") as c:
        r = preflight(c, "https://sandbox.cds-hooks.org")
        assert r.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
        assert "access-control-allow-origin" not in preflight(c, "http://127.0.0.1:3000").headers


def combo_tokens(value: str) -> set[tuple[str | None, str]]:
    """A token search value's (system or None, code) pairs: split at the commas and the `|` that FHIR search
    does not escape with a backslash, and unescaped."""
    tokens: list[list[str]] = [[""]]
    escaped = False
    for ch in value:
        if escaped:
            tokens[-1][-1] += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            tokens.append([""])
        elif ch == "|" and len(tokens[-1]) == 1:
            tokens[-1].append("")
        else:
            tokens[-1][-1] += ch
    return {(t[0], t[1]) if len(t) == 2 else (None, t[0]) for t in tokens}


def test_discovery_asks_for_the_codes_the_criteria_read_newest_first(tmp_path):
    with open_service(tmp_path) as c:
        services = c.get("/cds-services").json()["services"]
        codes = set(c.app.state.catalog.mappings.obs_index)
    for s in services:
        obs = s["prefetch"]["observations"]
        path, query = obs.split("?", 1)
        q = parse_qs(query)
        assert path == "Observation" and q["patient"] == ["{{context.patientId}}"]
        assert q["_sort"] == ["-date"] and int(q["_count"][0]) >= 500
        # a LOINC code alone (any system the server keeps it under), a site's own code with its system
        assert combo_tokens(q["combo-code"][0]) == {(None if s_ == LOINC else s_, c_) for s_, c_ in codes}
        assert "|" not in urlsplit(obs).query  # encoded: HAPI answers 400 to a bare '|'
