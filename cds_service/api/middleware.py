"""ASGI middleware: no tracebacks, JSON bodies only, request body size limit, client authentication."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException

from cds_service.api.auth import Authenticator, AuthError, KeysUnavailable

log = logging.getLogger("trial_matcher")
Scope = dict[str, Any]


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: list | None = None) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class NoTraceback:
    """Outermost: an unexpected error becomes a bare 500 and one log line with its type.

    Starlette's own error middleware re-raises after answering, and the server then logs the
    traceback, whose messages can quote the input (a token header, a patient's value). Here
    nothing of the exception but its class name is written anywhere.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001 - the last line of defence, by design
            log.error("unexpected error", extra={"error_type": type(e).__name__})
            if scope["type"] == "http" and not started:
                await _send_json(send, 500, {"error": "internal error"})


class AccessLog:
    """Outermost: one log line per request, with the route template, the status and the duration.

    The route template, never the path: /checklist/{token} must not put live tokens in the log. Plain
    ASGI rather than Starlette's `@app.middleware("http")`, which passes every response through a task
    group and a memory stream of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": getattr(scope.get("route"), "path", "(no route)"),  # the router puts it in the scope
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                },
            )


FORM_PATHS = {"/worklist/login"}  # the one HTML form: it runs nothing, only checks the admin token


class RequireJsonBody:
    """415 for a POST whose Content-Type is not JSON.

    Every POST body here is JSON. A browser can send a "simple" cross-origin POST (text/plain,
    form types) without a CORS preflight, so with client authentication off any web page could
    otherwise run hooks from a clinician's browser; JSON content types always need a preflight.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope.get("headers", []))
            has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
            media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            form_ok = scope.get("path") in FORM_PATHS and media == b"application/x-www-form-urlencoded"
            if has_body and media != b"application/json" and not media.endswith(b"+json") and not form_ok:
                return await _send_json(send, 415, {"error": "send the body as application/json"})
        return await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for bodies over `limit` bytes, by Content-Length at once, or while the app reads a chunked upload.

    The body is counted as the endpoint reads it, not read ahead: with client authentication on, the
    JWT is checked (by an inner middleware) before a byte of the body is read, so an unauthenticated
    caller cannot make the service buffer a body at all. Past the limit the read raises HTTPException(413),
    which FastAPI passes through its body parsing (any other error there would become a 400).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _send_json(send, 413, {"error": f"request body larger than {self.limit} bytes"})
        size = 0

        async def counted() -> dict:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.limit:
                    raise HTTPException(413, f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


class RequireClientJwt:
    """401 with no detail unless the request carries a valid CDS Hooks client JWT (503 with Retry-After
    when the issuer's keys cannot be read: the EHR's token may be fine, so it must not look refused).

    Protects the CDS Hooks endpoints (discovery included) and /match; CORS
    preflights (OPTIONS), health, the trial catalogue and admin (own token) pass.
    """

    PROTECTED = ("/cds-services", "/match")

    def __init__(self, app: Any, authenticator: Authenticator) -> None:
        self.app, self.auth = app, authenticator

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not scope["path"].startswith(self.PROTECTED):
            return await self.app(scope, receive, send)
        token = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                v = value.decode("latin-1")
                if v[:7].lower() == "bearer ":
                    token = v[7:].strip()
        try:
            if not token:
                raise AuthError("no bearer token")
            await self.auth.verify(token, scope["path"])
        except KeysUnavailable as e:  # the issuer's JWKS is down or slow: not the caller's fault, so not 401
            log.warning("client authentication unavailable", extra={"error_type": str(e)})
            retry = str(max(1, round(e.retry_after))).encode()
            return await _send_json(send, 503, {"error": "authentication unavailable"}, [(b"retry-after", retry)])
        except Exception as e:  # noqa: BLE001 - a token that breaks the checks is refused, never a 500
            reason = str(e) if isinstance(e, AuthError) else f"unexpected {type(e).__name__}"
            log.warning("client authentication failed", extra={"path": _template(scope["path"]), "error_type": reason})
            return await _send_json(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


def _template(path: str) -> str:
    """The protected paths hold no secrets, but log them by shape: /cds-services/{id}[/feedback], /match."""
    return path if len(path) <= 80 else path[:80] + "..."
