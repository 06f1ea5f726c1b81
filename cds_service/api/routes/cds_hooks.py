"""CDS Hooks 2.0: discovery, one route per service (typed by its hook's request model), feedback."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from cds_service.api.models import (
    CardsResponse,
    Discovery,
    FeedbackRequest,
    HookRequest,
    OrderContext,
    OrderSelectRequest,
    OrderSignRequest,
    PatientViewRequest,
    ServiceDescription,
)
from cds_service.api.responses import (
    JsonBytes,
    OrjsonRoute,
    error,
    errors,
    get_app_settings,
    get_catalog,
    get_matcher,
)
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.gather import prefetch_templates
from cds_service.pipeline import Matcher, PreconditionFailed
from cds_service.settings import Settings

log = logging.getLogger("trial_matcher")
router = APIRouter(route_class=OrjsonRoute, tags=["CDS Hooks"])

SERVICE_ID = "trial-matcher"
ORDER_SELECT_ID = "trial-order-select"
ORDER_SIGN_ID = "trial-order-sign"
SERVICE_HOOKS = {SERVICE_ID: "patient-view", ORDER_SELECT_ID: "order-select", ORDER_SIGN_ID: "order-sign"}
HOOK_REQUESTS = {SERVICE_ID: PatientViewRequest, ORDER_SELECT_ID: OrderSelectRequest, ORDER_SIGN_ID: OrderSignRequest}
_TYPE = re.compile(r"[A-Z][A-Za-z]+")  # the resource type a prefetch template opens with


def usage(prefetch: dict[str, str]) -> str:
    """What the service reads, named from its own prefetch templates, so the read scope an integrator grants
    from it never lags them (it once left out three types that criteria read)."""
    types = [m.group() for t in prefetch.values() if (m := _TYPE.match(t))]
    if any("_include=Medication" in t for t in prefetch.values()):  # a medication's referenced Medication
        types.append("Medication")
    types = list(dict.fromkeys(types))
    return (
        f"Prefetch, or fhirServer (on the service's allow-list) with a read token for {', '.join(types[:-1])} "
        f"and {types[-1]}."
    )


def services(observation_codes: frozenset[tuple[str, str]]) -> list[ServiceDescription]:
    """The three services, with prefetch templates that ask for the Observation codes the catalogue reads."""
    prefetch = prefetch_templates(observation_codes)
    return [
        ServiceDescription(
            hook="patient-view",
            id=SERVICE_ID,
            title="Clinical trial matcher",
            description="Suggests clinical trials the patient may be eligible for, with the criteria "
            "met, the data still missing and what needs review.",
            prefetch=prefetch,
            usageRequirements=usage(prefetch),
        ),
        ServiceDescription(
            hook="order-select",
            id=ORDER_SELECT_ID,
            title="Trial eligibility order check (select)",
            description="Warns, fast and from prefetched data, when a selected order would close a clinical "
            "trial the patient may be eligible for (washouts, live or mRNA vaccines).",
            prefetch=prefetch,
            usageRequirements="Prefetch; a prefetch cut after its first page is completed from fhirServer "
            "within the time budget. Without prefetch the service stays silent rather than slow.",
        ),
        ServiceDescription(
            hook="order-sign",
            id=ORDER_SIGN_ID,
            title="Trial eligibility order check (sign)",
            description="The final check before signing: warns when a draft order would close a clinical "
            "trial the patient may be eligible for, with the date eligibility would resume.",
            prefetch=prefetch,
            usageRequirements=usage(prefetch),
        ),
    ]


@router.get("/cds-services", response_model=Discovery, response_model_exclude_none=True, responses=errors(401))
async def discovery(catalog: Annotated[Catalog, Depends(get_catalog)]) -> Discovery:
    """CDS Hooks discovery: the trial matcher on `patient-view`, the order checks on `order-select`/`order-sign`."""
    return Discovery(services=services(frozenset(catalog.mappings.obs_index)))


def base_url(request: Request, settings: Settings) -> str | None:
    """Links point at the configured public URL; without one, at the address called only when its Host is
    trusted (the Host header is the caller's to choose: an untrusted one gets cards without a link)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    trusted = {h.strip().lower() for h in settings.trusted_hosts.split(",") if h.strip()}
    host = (request.headers.get("host") or "").lower()
    if host in trusted or host.rsplit(":", 1)[0] in trusted:
        return str(request.base_url).rstrip("/")
    return None


async def call_hook(request: Request, req: HookRequest, matcher: Matcher, settings: Settings) -> JSONResponse:
    """Call the service. Answers `{"cards": [...]}`, or 412 when the patient's data cannot be obtained."""
    token = req.fhirAuthorization.access_token.get_secret_value() if req.fhirAuthorization else None
    ctx = req.context
    try:
        if isinstance(ctx, OrderContext):
            cards = await matcher.order_check(
                ctx.patientId,
                req.prefetch,
                req.fhirServer,
                token,
                ctx.draftOrders.model_dump(mode="json", exclude_none=True),
                ctx.selections,
                final=req.hook == "order-sign",
                hook_instance=str(req.hookInstance),
            )
        else:
            cards = await matcher.patient_view(
                ctx.patientId, req.prefetch, req.fhirServer, token, str(req.hookInstance), base_url(request, settings)
            )
    except PreconditionFailed as e:
        log.info("precondition failed", extra={"hookInstance": str(req.hookInstance), "gaps": len(e.reasons)})
        return error(412, "the data this service needs could be neither prefetched nor fetched", reasons=e.reasons)
    return JsonBytes(cards.wire())


def _hook_route(service_id: str, model: type) -> None:
    async def endpoint(
        request: Request,
        req: Any,
        matcher: Annotated[Matcher, Depends(get_matcher)],
        settings: Annotated[Settings, Depends(get_app_settings)],
    ) -> JSONResponse:
        return await call_hook(request, req, matcher, settings)

    # set here, not written above: with postponed annotations FastAPI could not resolve the loop's `model`
    endpoint.__annotations__["req"] = Annotated[model, Body()]
    router.post(
        f"/cds-services/{service_id}",
        name=f"hook_{service_id.replace('-', '_')}",
        summary=f"CDS Hooks {SERVICE_HOOKS[service_id]}: {service_id}",
        response_model=CardsResponse,
        response_model_exclude_none=True,
        responses=errors(400, 401, 412, 413, 415),
    )(endpoint)


for _sid, _model in HOOK_REQUESTS.items():
    _hook_route(_sid, _model)


@router.post("/cds-services/{service_id}/feedback", responses=errors(400, 401, 404, 413))
async def feedback(
    service_id: str, body: FeedbackRequest, matcher: Annotated[Matcher, Depends(get_matcher)]
) -> dict[str, int]:
    """Store what the clinician did with cards (accepted / overridden). An overridden patient-view card with
    a reason dismisses that trial for that patient for `TRIAL_MATCHER_OVERRIDE_DAYS`."""
    if service_id not in SERVICE_HOOKS:
        raise HTTPException(404, "no CDS service of that id (GET /cds-services lists them)")  # the id is not echoed
    stored = await matcher.feedback(service_id, body.feedback)
    log.info("feedback stored", extra={"service": service_id, "stored": stored})
    return {"stored": stored}
