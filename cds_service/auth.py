"""CDS Hooks 2.0 client authentication: the EHR's signed JWT on every call.

Checked here: algorithm (ES256/ES384/RS256/RS384 only; `none` and HMAC are
refused, which also closes the RSA-public-key-as-HMAC-secret confusion), `kid`,
`iss` on the trusted list, signature against that issuer's keys (a configured
JWKS URL, a local JWKS file, or a `jku` header only when it is on the issuer's
allow-list), `aud` equal to the URL of the endpoint called (from the configured
public URL, never from the request's Host header), `exp`, `iat`, a short
lifetime, and `jti` never seen before.

Failures raise `AuthError`; the HTTP layer answers 401 with no detail. The
reason is logged as a fixed category, never with token content.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, Field

ALLOWED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "RS384"})
_KEY_TYPES = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "RS384": "RSA"}


class AuthError(Exception):
    """Why a token was refused, as a short fixed category (safe to log)."""


class TrustedIssuer(BaseModel):
    iss: str = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jku_allowed: list[str] = Field(default_factory=list)


@dataclass
class ReplayCache:
    """Seen (iss, jti) pairs until their token expires. Per process: see README for multi-worker notes."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    max_entries: int = 100_000

    def check_and_add(self, iss: str, jti: str, exp: float, now: float) -> None:
        if len(self.seen) > self.max_entries // 2:
            self.seen = {k: v for k, v in self.seen.items() if v > now}
        if len(self.seen) >= self.max_entries:
            raise AuthError("replay cache full")
        key = (iss, jti)
        if key in self.seen and self.seen[key] > now:
            raise AuthError("jti replayed")
        self.seen[key] = exp


@dataclass
class JwksCache:
    client: httpx.AsyncClient
    ttl: float = 300.0
    entries: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def keys(self, source: str, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        hit = self.entries.get(source)
        if hit and not refresh and now - hit[0] < self.ttl:
            return hit[1]
        async with self.lock:
            if source.startswith(("http://", "https://")):
                try:
                    resp = await self.client.get(source, headers={"Accept": "application/json"})
                except httpx.HTTPError as e:
                    raise AuthError("jwks unreachable") from e
                if resp.status_code != 200:
                    raise AuthError("jwks unreachable")
                try:
                    data = resp.json()
                except ValueError as e:
                    raise AuthError("jwks not json") from e
            else:
                data = json.loads(Path(source).read_text(encoding="utf-8"))
            keys = {k["kid"]: k for k in data.get("keys", []) if isinstance(k, dict) and "kid" in k}
            self.entries[source] = (now, keys)
            return keys


@dataclass
class Authenticator:
    issuers: dict[str, TrustedIssuer]
    public_url: str
    jwks: JwksCache
    leeway: float = 30.0
    max_lifetime: float = 300.0
    replay: ReplayCache = field(default_factory=ReplayCache)

    def audience(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    async def verify(self, token: str, path: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise AuthError("malformed token") from e
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError("algorithm not allowed")
        if header.get("typ", "JWT").upper() != "JWT":
            raise AuthError("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid missing")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise AuthError("issuer not trusted")
        source = self._key_source(issuer, header.get("jku"))
        jwk = (await self.jwks.keys(source)).get(kid)
        if jwk is None:  # keys may have rotated: refetch once
            jwk = (await self.jwks.keys(source, refresh=True)).get(kid)
        if jwk is None:
            raise AuthError("unknown kid")
        if jwk.get("kty") != _KEY_TYPES[alg] or jwk.get("alg", alg) != alg:
            raise AuthError("key does not match algorithm")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience(path),
                issuer=issuer.iss,
                leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as e:
            raise AuthError(type(e).__name__) from e
        now = time.time()
        if float(claims["exp"]) - float(claims["iat"]) > self.max_lifetime + self.leeway:
            raise AuthError("token lifetime too long")
        if float(claims["iat"]) > now + self.leeway:
            raise AuthError("issued in the future")
        self.replay.check_and_add(issuer.iss, str(claims["jti"]), float(claims["exp"]) + self.leeway, now)
        return claims

    @staticmethod
    def _key_source(issuer: TrustedIssuer, jku: Any) -> str:
        if jku is not None:
            if jku not in issuer.jku_allowed:
                raise AuthError("jku not allowed")  # never fetched
            return str(jku)
        if issuer.jwks_url:
            return issuer.jwks_url
        if issuer.jwks_file:
            return str(issuer.jwks_file)
        raise AuthError("no keys configured for issuer")
