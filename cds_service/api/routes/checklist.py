"""The checklist page behind a card: short-lived, unguessable link; never cached, framed or indexed."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from cds_service.api.responses import get_store
from cds_service.store import Store
from cds_service.views import checklists

router = APIRouter(tags=["Checklist"])


@router.get(
    "/checklist/{token}",
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown or forged link"}, 410: {"description": "Expired link"}},
)
async def checklist_page(token: str, store: Annotated[Store, Depends(get_store)]) -> HTMLResponse:
    """The criterion-by-criterion checklist behind a card (HTML; short-lived link, never cached)."""
    found = None
    if 20 <= len(token) <= 128:
        found = await store.get_checklist(checklists.token_hash(token))
    if found is None:
        return HTMLResponse(checklists.render_error(404), 404, headers=checklists.PAGE_HEADERS)
    expires_at, payload = found
    if payload is None or expires_at < time.time():
        return HTMLResponse(checklists.render_error(410), 410, headers=checklists.PAGE_HEADERS)
    html = await asyncio.to_thread(checklists.render_checklist, payload)
    return HTMLResponse(html, headers=checklists.PAGE_HEADERS)


@router.get("/static/checklist.css", include_in_schema=False)
async def checklist_css() -> Response:
    return Response(
        (checklists.STATIC / "checklist.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
