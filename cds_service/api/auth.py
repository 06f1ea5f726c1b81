"""CDS Hooks 2.0 client authentication: the EHR's signed JWT on every call.

Checked here: algorithm (ES256/ES384/RS256/RS384 only; `none` and HMAC are
refused, which also closes the RSA-public-key-as-HMAC-secret confusion), `kid`,
`iss` on the trusted list, signature against that issuer's keys (a configured
JWKS URL, a local JWKS file, or a `jku` header only when it is on the issuer's
allow-list), `aud` equal to the URL of the endpoint called (from the configured
public URL, never from the request's Host header), `exp`, `iat`, a short
lifetime, and `jti` never seen before by any worker or instance sharing the
store (store.py keeps (iss, jti, exp) under a unique key). Tokens over a size
cap are refused before decoding; JWKS sources are refetched at most once per
interval, so random `kid`s cannot amplify into fetches.

Failures raise `AuthError`; the HTTP layer answers 401 with no detail. The
reason is logged as a fixed category, never with token content.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


class ReplayGuard(Protocol):
    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool:
        """True the first time (iss, jti) is seen before `exp`; False for a replay."""
        ...


@dataclass
class ReplayCache:
    """Seen (iss, jti) pairs in this process only: for tests and tools. The service uses the shared store."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)

    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool:
        now = time.time()
        self.seen = {k: v for k, v in self.seen.items() if v > now} if len(self.seen) > 10_000 else self.seen
        if self.seen.get((iss, jti), 0) > now:
            return False
        self.seen[(iss, jti)] = exp
        return True


@dataclass
class JwksCache:
    """Keys per source, refetched at most once per `min_refresh` seconds whatever tokens ask for.

    An unsigned token with a trusted `iss` and a random `kid` costs nothing after the first
    refetch: the unknown kid waits for the interval, so no caller can make the service hammer
    the issuer's JWKS endpoint. Each source has its own lock, so a slow issuer holds up only itself.
    """

    client: httpx.AsyncClient
    ttl: float = 300.0
    min_refresh: float = 60.0
    entries: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def keys(self, source: str, refresh: bool = False) -> dict[str, Any]:
        hit = self.entries.get(source)
        if hit and not self._due(hit[0], refresh):
            return hit[1]
        async with self.locks.setdefault(source, asyncio.Lock()):
            hit = self.entries.get(source)  # another caller may have fetched while this one waited
            if hit and not self._due(hit[0], refresh):
                return hit[1]
            keys = await self._fetch(source)
            self.entries[source] = (time.monotonic(), keys)
            return keys

    def _due(self, fetched_at: float, refresh: bool) -> bool:
        age = time.monotonic() - fetched_at
        return age >= self.ttl or (refresh and age >= self.min_refresh)

    async def _fetch(self, source: str) -> dict[str, Any]:
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
        keys = data.get("keys", []) if isinstance(data, dict) else []
        return {k["kid"]: k for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)}


@dataclass
class Authenticator:
    issuers: dict[str, TrustedIssuer]
    public_url: str
    jwks: JwksCache
    leeway: float = 30.0
    max_lifetime: float = 300.0
    replay: ReplayGuard = field(default_factory=ReplayCache)
    max_token_bytes: int = 16 * 1024

    def audience(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    async def verify(self, token: str, path: str) -> dict[str, Any]:
        if len(token) > self.max_token_bytes:
            raise AuthError("token too large")  # before any decoding: a large token costs nothing
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise AuthError("malformed token") from e
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise AuthError("malformed token")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise AuthError("algorithm not allowed")
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise AuthError("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid missing")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
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
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise AuthError(type(e).__name__) from e
        self._check_times(claims)
        if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= 256:
            raise AuthError("jti malformed")
        if not await self.replay.claim_jti(issuer.iss, claims["jti"], float(claims["exp"]) + self.leeway):
            raise AuthError("jti replayed")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        try:
            exp, iat = float(claims["exp"]), float(claims["iat"])
        except (TypeError, ValueError) as e:
            raise AuthError("times malformed") from e
        if exp - iat > self.max_lifetime + self.leeway:
            raise AuthError("token lifetime too long")
        if iat > time.time() + self.leeway:
            raise AuthError("issued in the future")

    @staticmethod
    def _key_source(issuer: TrustedIssuer, jku: Any) -> str:
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku_allowed:
                raise AuthError("jku not allowed")  # never fetched
            return str(jku)
        if issuer.jwks_url:
            return issuer.jwks_url
        if issuer.jwks_file:
            return str(issuer.jwks_file)
        raise AuthError("no keys configured for issuer")
