"""The worklist pages, behind the admin token: a header for scripts, a signed session cookie for browsers.

The cookie holds an expiry and an HMAC of it under the admin token (never the token), is HttpOnly,
SameSite=Strict and scoped to /worklist; rotating the token ends every session. Pages are read-only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cds_service.api.responses import get_app_settings, get_catalog
from cds_service.eligibility.catalog import Catalog
from cds_service.settings import Settings
from cds_service.views import worklist as pages
from cds_service.worklist import changes
from cds_service.worklist.runs import RunStore

router = APIRouter(tags=["Worklist"])
COOKIE = "tm_worklist"
SESSION_SECONDS = 8 * 3600
MAX_FORM_BYTES = 4096


def _admin_token(settings: Settings) -> str:
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token:
        raise HTTPException(404, "admin endpoints are disabled (set TRIAL_MATCHER_ADMIN_TOKEN)")
    return token


def _sign(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"worklist:{expires}".encode(), hashlib.sha256).hexdigest()


def _signed_in(request: Request, token: str, authorization: str | None) -> bool:
    given = (authorization or "").removeprefix("Bearer ").strip()
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return True
    expires, _, mac = request.cookies.get(COOKIE, "").partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
        return False
    return hmac.compare_digest(mac.encode(), _sign(token, int(expires)).encode())


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=pages.PAGE_HEADERS)


@router.get("/worklist", response_class=HTMLResponse, responses={401: {}, 404: {}})
async def worklist_page(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    authorization: Annotated[str | None, Header()] = None,
    trial: Annotated[str | None, Query(max_length=32)] = None,
    within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
) -> HTMLResponse:
    """Who became eligible, whose bar lifts soon, who dropped out: the store's last two screens compared."""
    if not _signed_in(request, _admin_token(settings), authorization):
        return _html(pages.render_login(), 401)
    chosen = trial if trial in catalog.trials else None
    within = within_days if within_days is not None else settings.worklist_within_days
    store = RunStore(settings.database_url)
    wl = await asyncio.to_thread(changes.build, store, within, [chosen] if chosen else None)
    return _html(pages.render_worklist(wl, catalog.trials, chosen))


@router.get("/worklist/row/{row_id}", response_class=HTMLResponse, responses={401: {}, 404: {}})
async def worklist_row(
    row_id: int,
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    authorization: Annotated[str | None, Header()] = None,
) -> HTMLResponse:
    """One stored row: the trial's criteria with the outcomes of that screen."""
    if not _signed_in(request, _admin_token(settings), authorization):
        return _html(pages.render_login(), 401)
    found = await asyncio.to_thread(RunStore(settings.database_url).row, row_id) if 0 < row_id < 2**62 else None
    if found is None:
        return _html("<!doctype html><title>Not found</title><h1>No such row</h1>", 404)
    run, row = found
    return _html(pages.render_row(run, row, catalog.trials.get(row.trial)))


@router.post("/worklist/login", response_class=HTMLResponse, include_in_schema=False)
async def worklist_login(request: Request, settings: Annotated[Settings, Depends(get_app_settings)]) -> Response:
    token = _admin_token(settings)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return _html(pages.render_login(failed=True), 413)
    given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _html(pages.render_login(failed=True), 401)
    expires = int(time.time()) + SESSION_SECONDS
    out = RedirectResponse("/worklist", status_code=303, headers={"Cache-Control": "no-store"})
    out.set_cookie(COOKIE, f"{expires}.{_sign(token, expires)}", max_age=SESSION_SECONDS, path="/worklist",
                   httponly=True, samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
    return out
