"""REST for callers that are not an EHR hook: the full eligibility report for a Bundle or a patient id."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from cds_service.api.models import PatientBundle
from cds_service.api.responses import JsonBytes, OrjsonRoute, error, errors, get_app_settings, get_catalog, get_matcher
from cds_service.eligibility.catalog import Catalog, MixedPatients
from cds_service.eligibility.report import Report
from cds_service.pipeline import Matcher, PreconditionFailed
from cds_service.settings import Settings

router = APIRouter(route_class=OrjsonRoute, tags=["REST"])
AS_OF_MIN, AS_OF_MAX = date(1900, 1, 1), date(2199, 12, 31)  # date arithmetic stays inside Python's range


@router.post(
    "/match", response_model=Report, response_model_exclude_none=True, responses=errors(400, 401, 404, 412, 413)
)
async def match(
    catalog: Annotated[Catalog, Depends(get_catalog)],
    matcher: Annotated[Matcher, Depends(get_matcher)],
    settings: Annotated[Settings, Depends(get_app_settings)],
    body: Annotated[PatientBundle | None, Body(description="A FHIR Bundle of one patient's resources")] = None,
    patient: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9\-.]{1,64}$", description="Patient id on the configured FHIR server")
    ] = None,
    as_of: Annotated[
        date | None, Query(ge=AS_OF_MIN, le=AS_OF_MAX, description="Evaluation date (default today)")
    ] = None,
    trial: Annotated[list[str] | None, Query(description="Limit to these trial ids")] = None,
) -> JSONResponse:
    """The full eligibility report: every trial, every criterion with outcome and evidence."""
    for t in trial or []:
        if t not in catalog.trials:
            return error(404, "unknown trial id (GET /trials lists them)")  # the id sent is not echoed
    when = as_of or matcher.today()
    if patient is not None:
        return await _by_patient_id(matcher, settings, patient, when, trial)
    if body is None:
        return error(400, "POST a FHIR Bundle of one patient's resources, or use ?patient=ID")
    try:
        facts = catalog.facts(body.model_dump(mode="json", exclude_none=True))
    except MixedPatients as e:
        return error(400, str(e))
    if facts.patient == "Patient/unknown":
        return error(400, "the Bundle holds no Patient resource")
    report = catalog.report(facts, when, trial)
    await matcher.mark_dismissed(report, facts.patient.removeprefix("Patient/"))
    return JsonBytes(report.model_dump(mode="json", exclude_none=True))


async def _by_patient_id(
    matcher: Matcher, settings: Settings, patient: str, when: date, trial: list[str] | None
) -> JSONResponse:
    if not settings.fhir_base_url:
        return error(400, "no FHIR server configured (TRIAL_MATCHER_FHIR_BASE_URL); POST a Bundle instead")
    try:
        token = settings.fhir_token.get_secret_value() if settings.fhir_token else None
        got = await matcher.gather(patient, None, settings.fhir_base_url.rstrip("/"), token)
    except PreconditionFailed as e:
        return error(412, "the patient's data could not be read", reasons=e.reasons)
    report = matcher.report(got, patient, when, trial)
    await matcher.mark_dismissed(report, patient)
    return JsonBytes(report.model_dump(mode="json", exclude_none=True) | {"gaps": got.gaps})
