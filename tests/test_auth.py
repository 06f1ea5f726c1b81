"""CDS Hooks 2.0 client authentication: accepted and refused JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from cds_service.api.app import create_app
from cds_service.settings import Settings
from demo.hook_request import hook_request
from demo.load import demo_bundles

PUBLIC = "https://cds.example.org"
ISS = "https://ehr.example.com"

KEYS = {
    "ec384": (ec.generate_private_key(ec.SECP384R1()), "ES384"),
    "ec256": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "rsa": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS384"),
}


def jwk(kid: str, alg: str, key) -> dict:
    algo = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    d = algo.to_jwk(key.public_key(), as_dict=True)
    return {**d, "kid": kid, "alg": alg, "use": "sig"}


class JwksServer:
    """A real loopback HTTP server serving a JWKS and recording every request."""

    def __init__(self, jwks: dict) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def jku_server():
    other = ec.generate_private_key(ec.SECP384R1())
    server = JwksServer({"keys": [jwk("jku-key", "ES384", other)]})
    server.key = other
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def unlisted_server():
    server = JwksServer({"keys": []})
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory, jku_server):
    d = tmp_path_factory.mktemp("auth")
    (d / "jwks.json").write_text(json.dumps({"keys": [jwk(k, alg, key) for k, (key, alg) in KEYS.items()]}))
    issuers = [{"iss": ISS, "jwks_file": str(d / "jwks.json"), "jku_allowed": [f"{jku_server.url}/jwks.json"]}]
    settings = Settings(
        auth_required=True,
        public_url=PUBLIC,
        trusted_issuers=json.dumps(issuers),
        database_url=f"sqlite:///{d}/fb.sqlite3",
        log_level="WARNING",
    )
    with TestClient(create_app(settings)) as c:
        yield c


def token(path: str = "/cds-services", kid: str = "ec384", *, key=None, alg=None, headers=None, **claims) -> str:
    k, a = KEYS.get(kid, (None, None))
    now = int(time.time())
    payload = {"iss": ISS, "aud": PUBLIC + path, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
    payload.update(claims)
    payload = {k2: v for k2, v in payload.items() if v is not None}
    return jwt.encode(payload, key or k, algorithm=alg or a, headers={"kid": kid, **(headers or {})})


def get(client, tok: str | None, path: str = "/cds-services"):
    return client.get(path, headers={"Authorization": f"Bearer {tok}"} if tok else {})


@pytest.mark.parametrize("kid", ["ec384", "ec256", "rsa"])
def test_valid_tokens_are_accepted(client, kid):
    assert get(client, token(kid=kid)).status_code == 200


def test_hook_call_with_valid_token(client, catalog):
    path = "/cds-services/trial-matcher"
    r = client.post(path, json=hook_request("demo-amara"), headers={"Authorization": f"Bearer {token(path)}"})
    assert r.status_code == 200
    amara = catalog.report(catalog.facts(demo_bundles()["demo-amara"]), date.today())
    assert len(r.json()["cards"]) == sum(t.status != "ineligible" for t in amara.trials) > 0


def _refused(client, tok, path="/cds-services"):
    r = get(client, tok, path)
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized"}  # no detail


def test_missing_token(client):
    _refused(client, None)


def test_alg_none_is_refused(client):
    now = int(time.time())
    unsigned = jwt.encode(
        {"iss": ISS, "aud": PUBLIC + "/cds-services", "iat": now, "exp": now + 60, "jti": "x"},
        None,
        algorithm="none",
        headers={"kid": "ec384"},
    )
    _refused(client, unsigned)


def test_hmac_with_public_key_as_secret_is_refused(client):
    """The classic algorithm confusion: HS256 keyed with the server's RSA public key (crafted by hand,
    since PyJWT itself refuses to HMAC with a PEM key)."""
    pem = (
        KEYS["rsa"][0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa"}).encode())
    body = b64(
        json.dumps({"iss": ISS, "aud": PUBLIC + "/cds-services", "iat": now, "exp": now + 60, "jti": "y"}).encode()
    )
    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    _refused(client, f"{head}.{body}.{sig}")


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": PUBLIC + "/cds-services/other-service"},
        {"aud": "https://attacker.example/cds-services"},
        {"iss": "https://untrusted.example"},
        {"exp": int(time.time()) - 120},
        {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 3700},
        {"exp": int(time.time()) + 7200},  # lifetime too long
        {"jti": None},
        {"aud": None},
    ],
)
def test_bad_claims_are_refused(client, claims):
    _refused(client, token(**claims))


def test_token_for_discovery_does_not_open_the_hook(client):
    r = client.post(
        "/cds-services/trial-matcher",
        json=hook_request("demo-amara"),
        headers={"Authorization": f"Bearer {token('/cds-services')}"},
    )
    assert r.status_code == 401


def test_unknown_kid_and_wrong_key(client):
    _refused(client, token(kid="nope", key=KEYS["ec384"][0], alg="ES384"))
    impostor = ec.generate_private_key(ec.SECP384R1())
    _refused(client, token(kid="ec384", key=impostor))


def test_tampered_payload(client):
    head, body, sig = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["aud"] = PUBLIC + "/match"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _refused(client, f"{head}.{body}.{sig}")


def test_replayed_jti_is_refused(client):
    tok = token()
    assert get(client, tok).status_code == 200
    _refused(client, tok)


def test_jku_only_when_allow_listed(client, jku_server, unlisted_server):
    ok = token(kid="jku-key", key=jku_server.key, alg="ES384", headers={"jku": f"{jku_server.url}/jwks.json"})
    assert get(client, ok).status_code == 200
    assert jku_server.requests == ["/jwks.json"]
    bad = token(kid="jku-key", key=jku_server.key, alg="ES384", headers={"jku": f"{unlisted_server.url}/jwks.json"})
    _refused(client, bad)
    assert unlisted_server.requests == []  # a jku off the allow-list is never contacted


def test_open_endpoints_and_cors_preflight(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/trials").status_code == 200
    r = client.options(
        "/cds-services/trial-matcher",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://sandbox.cds-hooks.org")
    _refused(client, None, "/match")


def test_auth_required_without_issuers_refuses_to_start(tmp_path):
    with pytest.raises(RuntimeError, match="TRUSTED_ISSUERS"):
        create_app(Settings(auth_required=True, database_url=f"sqlite:///{tmp_path}/x.sqlite3"))


def _settings(d, issuers: list[dict], **over) -> Settings:
    return Settings(
        **{
            "auth_required": True,
            "public_url": PUBLIC,
            "trusted_issuers": json.dumps(issuers),
            "database_url": f"sqlite:///{d}/shared.sqlite3",
            "log_level": "WARNING",
            **over,
        }
    )


def test_a_token_is_accepted_once_across_instances_sharing_a_database(tmp_path):
    """Two workers or two instances on one database: the second sees the first's jti."""
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk("ec384", "ES384", KEYS["ec384"][0])]}))
    settings = _settings(tmp_path, [{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json")}])
    tok = token()
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        assert get(one, tok).status_code == 200
        _refused(two, tok)
        _refused(one, tok)
        assert get(two, token()).status_code == 200


@pytest.mark.parametrize(
    "header",
    [{"typ": 7}, {"typ": ["JWT"]}, {"jku": ["x"]}, {"kid": 5}, {"crit": "x"}],
    ids=["typ-int", "typ-list", "jku-list", "kid-int", "crit-string"],
)
def test_odd_header_types_are_401_not_500(client, header):
    """Crafted by hand: no valid signature is needed to reach the header checks."""
    now = int(time.time())
    claims = {"iss": ISS, "aud": PUBLIC + "/cds-services", "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    _refused(client, f"{b64({'alg': 'ES384', 'kid': 'ec384', **header})}.{b64(claims)}.c2ln")


def test_random_kids_cannot_amplify_jwks_fetches(tmp_path):
    """An unsigned token with a trusted iss and a random kid used to force a JWKS fetch per request."""
    server = JwksServer({"keys": [jwk("ec384", "ES384", KEYS["ec384"][0])]})
    try:
        settings = _settings(tmp_path, [{"iss": ISS, "jwks_url": f"{server.url}/jwks.json"}])
        with TestClient(create_app(settings)) as c:
            assert get(c, token()).status_code == 200  # first fetch
            for _ in range(30):
                _refused(c, token(kid=f"random-{uuid.uuid4()}", key=KEYS["ec384"][0], alg="ES384"))
            assert len(server.requests) == 1  # the unknown kids wait for the refresh interval
            assert get(c, token()).status_code == 200
    finally:
        server.httpd.shutdown()


def test_rotated_keys_are_found_after_the_refresh_interval(tmp_path):
    jwks = {"keys": [jwk("ec384", "ES384", KEYS["ec384"][0])]}
    server = JwksServer(jwks)
    try:
        settings = _settings(
            tmp_path, [{"iss": ISS, "jwks_url": f"{server.url}/jwks.json"}], jwks_min_refresh_seconds=0
        )
        with TestClient(create_app(settings)) as c:
            assert get(c, token()).status_code == 200
            jwks["keys"].append(jwk("ec256", "ES256", KEYS["ec256"][0]))  # the EHR rotates in a new key
            assert get(c, token(kid="ec256")).status_code == 200
        assert len(server.requests) == 2
    finally:
        server.httpd.shutdown()


def test_oversized_tokens_are_refused_before_decoding(tmp_path):
    server = JwksServer({"keys": []})
    try:
        settings = _settings(tmp_path, [{"iss": ISS, "jwks_url": f"{server.url}/jwks.json"}])
        with TestClient(create_app(settings)) as c:
            big = token(kid="nope", key=KEYS["ec384"][0], alg="ES384", padding="x" * 20_000)
            _refused(c, big)
        assert server.requests == []  # not decoded, so no key was looked up
    finally:
        server.httpd.shutdown()
