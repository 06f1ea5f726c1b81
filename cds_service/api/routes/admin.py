"""Admin: stored feedback, a page at a time, behind its own bearer token (disabled without one)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query

from cds_service.api.responses import OrjsonRoute, errors, get_app_settings, get_store
from cds_service.settings import Settings
from cds_service.store import Store

router = APIRouter(route_class=OrjsonRoute, tags=["Admin"])
SQL_INT_MAX = 2**63 - 1  # SQLite's and PostgreSQL's BIGINT: a larger id overflowed the driver (a 500), now a 400


@router.get("/admin/feedback", responses=errors(400, 401, 404))
async def admin_feedback(
    store: Annotated[Store, Depends(get_store)],
    settings: Annotated[Settings, Depends(get_app_settings)],
    authorization: Annotated[str | None, Header()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None,
        Query(ge=1, le=SQL_INT_MAX, description="Page back: only feedback with an id below this"),
    ] = None,
) -> dict[str, Any]:
    """Stored feedback, newest first, a page at a time (`next` is the `before` of the following page).
    Needs `Authorization: Bearer <TRIAL_MATCHER_ADMIN_TOKEN>`."""
    expected = settings.admin_token.get_secret_value() if settings.admin_token else None
    if not expected:
        raise HTTPException(404, "admin endpoints are disabled (set TRIAL_MATCHER_ADMIN_TOKEN)")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "unauthorized")
    rows = await store.recent(limit, before=before)
    page: dict[str, Any] = {"total": await store.count(), "feedback": rows}
    if len(rows) == limit:
        page["next"] = rows[-1]["id"]
    return page
