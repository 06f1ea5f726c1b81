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
interval, so random `kid`s cannot amplify into fetches, and a failing JWKS is
asked again only after a backoff, never making a caller wait past a bound.

Failures raise `AuthError`; the HTTP layer answers 401 with no detail (503 when
the issuer's keys cannot be read). The reason is logged as a fixed category,
never with token content.
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

from cds_service.settings import TrustedIssuer

ALLOWED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "RS384"})
_KEY_TYPES = {"ES256": "EC", "ES384": "EC", "RS256": "RSA", "RS384": "RSA"}


class AuthError(Exception):
    """Why a token was refused, as a short fixed category (safe to log)."""


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


class KeysUnavailable(AuthError):
    """The issuer's keys could not be read (its JWKS is down or slow): the service's problem, not the
    caller's token, so the HTTP layer answers 503 with `Retry-After`, not 401."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class JwksCache:
    """Keys per source, refetched at most once per `min_refresh` seconds whatever tokens ask for.

    An unsigned token with a trusted `iss` and a random `kid` costs nothing after the first
    refetch: the unknown kid waits for the interval, so no caller can make the service hammer
    the issuer's JWKS endpoint. Each source has its own lock, so a slow issuer holds up only itself.

    Failures are cached too: after a failed fetch (error, non-200, not JSON, slower than `max_wait`)
    the source is not asked again for `failure_backoff` seconds, doubling with each failure in a row
    up to `ttl`; meanwhile the last good keys are used (up to `stale_grace` past their lifetime), or
    the call fails at once. No caller waits
    longer than `max_wait` (kept under the hook's time budget) for the lock and the fetch together.
    """

    client: httpx.AsyncClient
    ttl: float = 300.0
    min_refresh: float = 60.0
    failure_backoff: float = 5.0  # TRIAL_MATCHER_JWKS_FAILURE_BACKOFF_SECONDS
    max_wait: float = 2.0  # TRIAL_MATCHER_JWKS_MAX_WAIT_SECONDS
    stale_grace: float = 3600.0  # how long past `ttl` the last good keys serve while the JWKS fails
    entries: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, tuple[float, int]] = field(default_factory=dict)  # source -> (retry at, failures in a row)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def keys(self, source: str, refresh: bool = False) -> dict[str, Any]:
        hit = self.entries.get(source)
        if hit and not self._due(hit[0], refresh):
            return hit[1]
        if self._backing_off(source):
            return self._fallback(source)
        lock = self.locks.setdefault(source, asyncio.Lock())
        deadline = asyncio.get_running_loop().time() + self.max_wait
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()  # the only await here: a timeout means another caller's fetch is slow
        except TimeoutError:
            return self._fallback(source)
        try:
            hit = self.entries.get(source)  # another caller may have fetched while this one waited
            if hit and not self._due(hit[0], refresh):
                return hit[1]
            if self._backing_off(source):
                return self._fallback(source)
            return await self._refetch(source, deadline)
        finally:
            lock.release()

    async def _refetch(self, source: str, deadline: float) -> dict[str, Any]:
        """Fetch under the caller's deadline; a failure of any kind starts (or lengthens) the backoff."""
        try:
            async with asyncio.timeout_at(deadline):
                keys = await self._fetch(source)
        except (AuthError, TimeoutError, OSError, ValueError):
            _, streak = self.failures.get(source, (0.0, 0))
            wait = min(max(self.ttl, self.failure_backoff), self.failure_backoff * 2**streak)
            self.failures[source] = (time.monotonic() + wait, streak + 1)
            return self._fallback(source)
        self.entries[source] = (time.monotonic(), keys)
        self.failures.pop(source, None)
        return keys

    def _backing_off(self, source: str) -> bool:
        failed = self.failures.get(source)
        return failed is not None and time.monotonic() < failed[0]

    def _fallback(self, source: str) -> dict[str, Any]:
        """The last good keys of `source` (a JWKS outage does not refuse tokens it signed), else 503."""
        hit = self.entries.get(source)
        if hit and time.monotonic() - hit[0] < self.ttl + self.stale_grace:
            return hit[1]
        failed = self.failures.get(source)
        retry = max(1.0, failed[0] - time.monotonic()) if failed else self.max_wait
        raise KeysUnavailable("jwks unavailable", retry)

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
