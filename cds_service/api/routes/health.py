"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from cds_service.api.responses import get_catalog, get_store
from cds_service.eligibility.catalog import Catalog
from cds_service.store import Store

router = APIRouter(tags=["Health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(
    catalog: Annotated[Catalog, Depends(get_catalog)], store: Annotated[Store, Depends(get_store)]
) -> dict[str, Any]:
    """Readiness: trials loaded and the feedback store reachable."""
    await store.count()
    ready: dict[str, Any] = {"status": "ready", "trials": len(catalog.trials)}
    if catalog.problems:  # by file name: this endpoint answers without a token, and a path tells the layout
        ready["trial_file_problems"] = [str(replace(p, file=PurePath(p.file).name)) for p in catalog.problems]
    return ready
