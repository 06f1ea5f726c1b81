"""HTTP layer: CDS Hooks endpoints, REST for non-EHR callers, admin and health.

Only HTTP concerns live here; the work is in `matcher.py` and below.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any

import httpx
import orjson
from fastapi import Body, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_service import __version__
from cds_service.api.auth import Authenticator, JwksCache
from cds_service.api.middleware import BodySizeLimit, NoTraceback, RequireClientJwt, RequireJsonBody
from cds_service.api.models import (
    CardsResponse,
    Discovery,
    FeedbackRequest,
    HookRequest,
    OrderContext,
    OrderSelectRequest,
    OrderSignRequest,
    PatientBundle,
    PatientViewRequest,
    ServiceDescription,
)
from cds_service.eligibility.catalog import Catalog, MixedPatients
from cds_service.eligibility.coverage import catalog_entry
from cds_service.eligibility.report import Report
from cds_service.fhir.gather import Gatherer, prefetch_templates
from cds_service.logs import setup_logging
from cds_service.pipeline import ChecklistLinks, Matcher, PreconditionFailed
from cds_service.settings import Settings, get_settings
from cds_service.store import open_store
from cds_service.views import checklists
from cds_service.views.research_study import research_study

log = logging.getLogger("trial_matcher")
SERVICE_ID = "trial-matcher"
ORDER_SELECT_ID = "trial-order-select"
ORDER_SIGN_ID = "trial-order-sign"
SERVICE_HOOKS = {SERVICE_ID: "patient-view", ORDER_SELECT_ID: "order-select", ORDER_SIGN_ID: "order-sign"}
HOOK_REQUESTS = {SERVICE_ID: PatientViewRequest, ORDER_SELECT_ID: OrderSelectRequest, ORDER_SIGN_ID: OrderSignRequest}


class ErrorBody(BaseModel):
    error: str
    details: list[dict[str, Any]] | None = None
    reasons: list[str] | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed JSON, wrong hook, missing context or invalid fields",
        401: "Missing or invalid client JWT (no detail given)",
        404: "Unknown service, trial or disabled endpoint",
        412: "The patient's data could be neither prefetched nor fetched",
        413: "Request body too large",
        415: "The body is not JSON (Content-Type application/json)",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


FHIR_JSON = "application/fhir+json"
AS_OF_MIN, AS_OF_MAX = date(1900, 1, 1), date(2199, 12, 31)  # date arithmetic stays inside Python's range


class JsonBytes(JSONResponse):
    """JSON rendered by orjson (the hook's cards, reports of every criterion)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JsonBytes(status_code=status, content={"error": message, **extra})


class OrjsonRequest(Request):
    """Parses JSON bodies with orjson (several times faster than json on multi-MB prefetch)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self):  # type: ignore[no-untyped-def]
        handler = super().get_route_handler()

        async def route_handler(request: Request):  # type: ignore[no-untyped-def]
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route_handler


def tune_gc(threshold: int) -> None:
    """Keep the start-up heap (catalog, models) out of every collection and collect young objects less often.

    Parsing a multi-MB prefetch creates hundreds of thousands of containers; with Python's
    default gen-0 threshold (700) the collector rescans them again and again, which made
    parsing 2.5-4x slower in bench/. The code creates no reference cycles on the hot path.
    """
    gc.collect()
    gc.freeze()
    if threshold > 0:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(threshold, max(g1, 50), max(g2, 100))


class SharedReplay:
    """JWT ids claimed in the shared store, so a token is accepted once across workers and instances."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def claim_jti(self, iss: str, jti: str, exp: float) -> bool:
        return await self.app.state.store.claim_jti(iss, jti, exp)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings.log_level)
    catalog = Catalog.load(
        settings.mappings_dir, settings.trials_dir, settings.strict_validation, settings.temporary_horizon_days
    )
    issuers = settings.issuers
    allow_list = settings.allow_list  # parsed now: a malformed entry stops start-up, not a request
    if settings.auth_required and (not settings.public_url or not issuers):
        raise RuntimeError(
            "client authentication is required: set TRIAL_MATCHER_PUBLIC_URL and TRIAL_MATCHER_TRUSTED_ISSUERS "
            "(or TRIAL_MATCHER_AUTH_REQUIRED=false for local use only)"
        )
    # trust_env=False: no proxy or netrc from the environment may redirect or decorate these requests
    jwt_client = httpx.AsyncClient(timeout=httpx.Timeout(2.0), follow_redirects=False, trust_env=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fhir_timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        gatherer = Gatherer(client, allow_list, settings.fhir_page_cap, settings.hook_budget_seconds)
        app.state.store = open_store(settings.database_url)
        links = ChecklistLinks(
            app.state.store, settings.checklist_ttl_seconds, settings.checklist_link_type, settings.smart_launch_url
        )
        app.state.matcher = Matcher(catalog, gatherer, settings.as_of, links)
        if not settings.auth_required:
            log.warning(
                "CLIENT AUTHENTICATION IS OFF: any caller can use this service. Local use only; set "
                "TRIAL_MATCHER_AUTH_REQUIRED=true with trusted issuers before handling real patient data."
            )
        try:
            yield
        finally:
            await client.aclose()
            await jwt_client.aclose()
            await app.state.store.close()

    tune_gc(settings.gc_threshold)
    app = FastAPI(
        title="trial-matcher",
        version=__version__,
        description="CDS Hooks service suggesting clinical trials a patient may match, from FHIR R4 data.",
        lifespan=lifespan,
    )
    app.router.route_class = OrjsonRoute
    app.state.catalog = catalog
    app.state.settings = settings
    # Outermost last: CORS answers preflights before auth; the body limit applies before anything reads it.
    app.add_middleware(RequireJsonBody)
    if settings.auth_required:
        authenticator = Authenticator(
            {i.iss: i for i in issuers},
            settings.public_url,  # type: ignore[arg-type]
            JwksCache(jwt_client, min_refresh=settings.jwks_min_refresh_seconds),
            leeway=settings.jwt_leeway_seconds,
            max_lifetime=settings.jwt_max_lifetime_seconds,
            replay=SharedReplay(app),
            max_token_bytes=settings.max_token_bytes,
        )
        app.add_middleware(RequireClientJwt, authenticator=authenticator)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    origins = settings.cors
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(NoTraceback)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The message of an unexpected error may quote input: log its type only, answer nothing specific.
        log.error("unexpected error", extra={"error_type": type(exc).__name__})
        return _error(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold patient data or a token.
        details = [{"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _error(400, "invalid request", details=details)

    @app.middleware("http")
    async def _access_log(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        log.info(
            "request",
            extra={
                "method": request.method,
                # the route template, never the path: /checklist/{token} must not put live tokens in the log
                "path": getattr(route, "path", "(no route)"),
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            },
        )
        return response

    # --- CDS Hooks ------------------------------------------------------------------------------

    @app.get(
        "/cds-services",
        response_model=Discovery,
        response_model_exclude_none=True,
        tags=["CDS Hooks"],
        responses=_errors(401),
    )
    async def discovery() -> Discovery:
        """CDS Hooks discovery: the trial matcher on `patient-view`, the order checks on `order-select`/`order-sign`."""
        usage = (
            "Prefetch, or fhirServer (on the service's allow-list) with a read token for Patient, Observation, "
            "Condition, MedicationStatement, MedicationRequest and Immunization."
        )
        return Discovery(
            services=[
                ServiceDescription(
                    hook="patient-view",
                    id=SERVICE_ID,
                    title="Clinical trial matcher",
                    description="Suggests clinical trials the patient may be eligible for, with the criteria "
                    "met, the data still missing and what needs review.",
                    prefetch=prefetch_templates(),
                    usageRequirements=usage,
                ),
                ServiceDescription(
                    hook="order-select",
                    id=ORDER_SELECT_ID,
                    title="Trial eligibility order check (select)",
                    description="Warns, fast and from prefetched data alone, when a selected order would close a "
                    "clinical trial the patient may be eligible for (washouts, live or mRNA vaccines).",
                    prefetch=prefetch_templates(),
                    usageRequirements="Prefetch; without it the service stays silent rather than slow.",
                ),
                ServiceDescription(
                    hook="order-sign",
                    id=ORDER_SIGN_ID,
                    title="Trial eligibility order check (sign)",
                    description="The final check before signing: warns when a draft order would close a clinical "
                    "trial the patient may be eligible for, with the date eligibility would resume.",
                    prefetch=prefetch_templates(),
                    usageRequirements=usage,
                ),
            ]
        )

    async def hook(request: Request, req: HookRequest) -> JSONResponse:
        """Call the service. Answers `{"cards": [...]}`, or 412 when the patient's data cannot be obtained."""
        token = req.fhirAuthorization.access_token.get_secret_value() if req.fhirAuthorization else None
        ctx = req.context
        try:
            matcher: Matcher = request.app.state.matcher
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
                    ctx.patientId, req.prefetch, req.fhirServer, token, str(req.hookInstance), _base_url(request)
                )
        except PreconditionFailed as e:
            log.info("precondition failed", extra={"hookInstance": str(req.hookInstance), "gaps": len(e.reasons)})
            return _error(412, "the data this service needs could be neither prefetched nor fetched", reasons=e.reasons)
        return JsonBytes(cards.wire())

    # One route per service, each with the request model of its hook, so OpenAPI (and fuzzers) see the shape.
    for service_id, model in HOOK_REQUESTS.items():

        async def endpoint(request: Request, req: Any) -> JSONResponse:
            return await hook(request, req)

        # set here, not written above: with postponed annotations FastAPI could not resolve the loop's `model`
        endpoint.__annotations__["req"] = Annotated[model, Body()]
        app.post(
            f"/cds-services/{service_id}",
            tags=["CDS Hooks"],
            name=f"hook_{service_id.replace('-', '_')}",
            summary=f"CDS Hooks {SERVICE_HOOKS[service_id]}: {service_id}",
            response_model=CardsResponse,
            response_model_exclude_none=True,
            responses=_errors(400, 401, 412, 413, 415),
        )(endpoint)

    @app.post("/cds-services/{service_id}/feedback", tags=["CDS Hooks"], responses=_errors(400, 401, 404, 413))
    async def feedback(service_id: str, request: Request, body: FeedbackRequest) -> dict[str, int]:
        """Store what the clinician did with cards (accepted / overridden)."""
        if service_id not in SERVICE_HOOKS:
            raise HTTPException(404, f"no CDS service '{service_id[:64]}'")
        stored = await request.app.state.store.add(service_id, body.feedback)
        log.info("feedback stored", extra={"service": service_id, "stored": stored})
        return {"stored": stored}

    trusted_hosts = {h.strip().lower() for h in settings.trusted_hosts.split(",") if h.strip()}

    def _base_url(request: Request) -> str | None:
        """Links point at the configured public URL; without one, at the address called only when its Host is
        trusted (the Host header is the caller's to choose: an untrusted one gets cards without a link)."""
        if settings.public_url:
            return settings.public_url.rstrip("/")
        host = (request.headers.get("host") or "").lower()
        if host in trusted_hosts or host.rsplit(":", 1)[0] in trusted_hosts:
            return str(request.base_url).rstrip("/")
        return None

    # --- checklist pages -------------------------------------------------------------------------

    @app.get(
        "/checklist/{token}",
        tags=["Checklist"],
        response_class=HTMLResponse,
        responses={404: {"description": "Unknown or forged link"}, 410: {"description": "Expired link"}},
    )
    async def checklist_page(token: str, request: Request) -> HTMLResponse:
        """The criterion-by-criterion checklist behind a card (HTML; short-lived link, never cached)."""
        found = None
        if 20 <= len(token) <= 128:
            found = await request.app.state.store.get_checklist(checklists.token_hash(token))
        if found is None:
            return HTMLResponse(checklists.render_error(404), 404, headers=checklists.PAGE_HEADERS)
        expires_at, payload = found
        if payload is None or expires_at < time.time():
            return HTMLResponse(checklists.render_error(410), 410, headers=checklists.PAGE_HEADERS)
        html = await asyncio.to_thread(checklists.render_checklist, payload)
        return HTMLResponse(html, headers=checklists.PAGE_HEADERS)

    @app.get("/static/checklist.css", include_in_schema=False)
    async def checklist_css() -> Response:
        return Response(
            (checklists.STATIC / "checklist.css").read_bytes(),
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    # --- REST ----------------------------------------------------------------------------------------

    @app.post(
        "/match",
        tags=["REST"],
        response_model=Report,
        response_model_exclude_none=True,
        responses=_errors(400, 401, 404, 412, 413),
    )
    async def match(
        request: Request,
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
        matcher: Matcher = request.app.state.matcher
        for t in trial or []:
            if t not in catalog.trials:
                return _error(404, f"unknown trial '{t[:20]}'")
        when = as_of or matcher.today()
        if patient is not None:
            if not settings.fhir_base_url:
                return _error(400, "no FHIR server configured (TRIAL_MATCHER_FHIR_BASE_URL); POST a Bundle instead")
            try:
                token = settings.fhir_token.get_secret_value() if settings.fhir_token else None
                got = await matcher.gather(patient, None, settings.fhir_base_url.rstrip("/"), token)
            except PreconditionFailed as e:
                return _error(412, "the patient's data could not be read", reasons=e.reasons)
            report = matcher.report(got, patient, when, trial)
            return JsonBytes(report.model_dump(mode="json", exclude_none=True) | {"gaps": got.gaps})
        if body is None:
            return _error(400, "POST a FHIR Bundle of one patient's resources, or use ?patient=ID")
        try:
            facts = catalog.facts(body.model_dump(mode="json", exclude_none=True))
        except MixedPatients as e:
            return _error(400, str(e))
        if facts.patient == "Patient/unknown":
            return _error(400, "the Bundle holds no Patient resource")
        report = catalog.report(facts, when, trial)
        return JsonBytes(report.model_dump(mode="json", exclude_none=True))

    @app.get("/trials", tags=["Trials"])
    async def trials() -> list[dict[str, Any]]:
        """The trial catalogue with criteria coverage."""
        return [catalog_entry(t) for t in catalog.trials.values()]

    @app.get("/trials/{trial_id}", tags=["Trials"], responses=_errors(404))
    async def trial_detail(trial_id: str) -> dict[str, Any]:
        """One trial as data: metadata and every criterion with its quoted text and rule or review reason."""
        t = catalog.trials.get(trial_id)
        if t is None:
            raise HTTPException(404, "unknown trial")
        return t.model_dump(mode="json", exclude_none=True)

    @app.get("/trials/{trial_id}/ResearchStudy", tags=["Trials"], responses=_errors(404))
    async def trial_fhir(trial_id: str) -> JSONResponse:
        """The trial as a FHIR R4 ResearchStudy with its criteria in a contained enrollment Group."""
        t = catalog.trials.get(trial_id)
        if t is None:
            raise HTTPException(404, "unknown trial")
        return JsonBytes(research_study(t), media_type=FHIR_JSON)

    # --- admin and health -----------------------------------------------------------------------

    @app.get("/admin/feedback", tags=["Admin"], responses=_errors(401, 404))
    async def admin_feedback(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[int | None, Query(ge=1, description="Page back: only feedback with an id below this")] = None,
    ) -> dict[str, Any]:
        """Stored feedback, newest first, a page at a time (`next` is the `before` of the following page).
        Needs `Authorization: Bearer <TRIAL_MATCHER_ADMIN_TOKEN>`."""
        expected = settings.admin_token.get_secret_value() if settings.admin_token else None
        if not expected:
            raise HTTPException(404, "admin endpoints are disabled (set TRIAL_MATCHER_ADMIN_TOKEN)")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "unauthorized")
        store = request.app.state.store
        rows = await store.recent(limit, before=before)
        page: dict[str, Any] = {"total": await store.count(), "feedback": rows}
        if len(rows) == limit:
            page["next"] = rows[-1]["id"]
        return page

    @app.get("/healthz", tags=["Health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["Health"])
    async def readyz(request: Request) -> dict[str, Any]:
        """Readiness: trials loaded and the feedback store reachable."""
        await request.app.state.store.count()
        return {"status": "ready", "trials": len(catalog.trials)}

    return app
