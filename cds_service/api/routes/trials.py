"""The trial catalogue: coverage, each trial as data, and each as a FHIR R4 ResearchStudy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from cds_service.api.responses import FHIR_JSON, JsonBytes, OrjsonRoute, errors, get_catalog
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.coverage import catalog_entry
from cds_service.eligibility.trials import Trial
from cds_service.views.research_study import research_study

router = APIRouter(route_class=OrjsonRoute, tags=["Trials"])


def _trial(trial_id: str, catalog: Catalog) -> Trial:
    t = catalog.trials.get(trial_id)
    if t is None:
        raise HTTPException(404, "unknown trial")
    return t


@router.get("/trials")
async def trials(catalog: Annotated[Catalog, Depends(get_catalog)]) -> list[dict[str, Any]]:
    """The trial catalogue with criteria coverage."""
    return [catalog_entry(t) for t in catalog.trials.values()]


@router.get("/trials/{trial_id}", responses=errors(404))
async def trial_detail(trial_id: str, catalog: Annotated[Catalog, Depends(get_catalog)]) -> dict[str, Any]:
    """One trial as data: metadata and every criterion with its quoted text and rule or review reason."""
    return _trial(trial_id, catalog).model_dump(mode="json", exclude_none=True)


@router.get("/trials/{trial_id}/ResearchStudy", responses=errors(404))
async def trial_fhir(trial_id: str, catalog: Annotated[Catalog, Depends(get_catalog)]) -> JSONResponse:
    """The trial as a FHIR R4 ResearchStudy with its criteria in a contained enrollment Group."""
    return JsonBytes(research_study(_trial(trial_id, catalog)), media_type=FHIR_JSON)
