"""The app factory: settings in, a FastAPI app out. Routers hold the endpoints (one per area, in
`routes/`); this module wires what they share (catalogue, matcher, store), the middleware stack and
the error handlers."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_service import __version__
from cds_service.api.auth import Authenticator, JwksCache
from cds_service.api.invalid import defined_names, said_back
from cds_service.api.middleware import AccessLog, BodySizeLimit, NoTraceback, RequireClientJwt, RequireJsonBody
from cds_service.api.responses import OrjsonRoute, error
from cds_service.api.routes import admin, cds_hooks, checklist, health, match, trials, worklist
from cds_service.dismissals import Dismissals
from cds_service.eligibility.catalog import Catalog
from cds_service.fhir.gather import Gatherer
from cds_service.logs import setup_logging
from cds_service.pipeline import ChecklistLinks, Matcher
from cds_service.runtime import tune_gc
from cds_service.settings import Settings, get_settings
from cds_service.store import open_store

log = logging.getLogger("trial_matcher")


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
    for problem in catalog.problems:  # one bad trial file must not keep the others from being served
        log.error("trial file left out", extra={"problem": str(problem)})
    problem = settings.serve_problem()
    if problem:
        raise RuntimeError(problem)
    # trust_env=False: no proxy or netrc from the environment may redirect or decorate these requests
    jwt_client = httpx.AsyncClient(timeout=httpx.Timeout(2.0), follow_redirects=False, trust_env=False)
    tune_gc(settings.gc_threshold)
    # a FastAPI app whose /docs (Swagger UI) loads its scripts from the service, not from a CDN a hospital network
    # may block; no /redoc, whose page fetches its maker's logo from another host whatever is self-hosted
    app = FastAPIOffline(
        redoc_url=None,
        title="trial-matcher",
        version=__version__,
        description="CDS Hooks service suggesting clinical trials a patient may match, from FHIR R4 data.",
        lifespan=_lifespan(settings, catalog, jwt_client),
    )
    app.router.route_class = OrjsonRoute
    app.state.catalog = catalog
    app.state.settings = settings
    _add_middleware(app, settings, jwt_client)
    _add_error_handlers(app)
    for router in (
        cds_hooks.router,
        checklist.router,
        match.router,
        trials.router,
        admin.router,
        worklist.router,
        health.router,
    ):
        app.include_router(router)
    return app


def _lifespan(settings: Settings, catalog: Catalog, jwt_client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    allow_list = settings.allow_list  # parsed now: a malformed entry stops start-up, not a request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fhir_timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        gatherer = Gatherer(
            client,
            allow_list,
            settings.fhir_page_cap,
            settings.hook_budget_seconds,
            observation_codes=frozenset(catalog.mappings.obs_index),  # ask the server only for what criteria read
            max_response_bytes=settings.fhir_max_response_bytes,
            max_hook_bytes=settings.fhir_max_hook_bytes,
            max_per_type=settings.fhir_max_resources_per_type,
        )
        app.state.store = open_store(settings.database_url)
        links = ChecklistLinks(
            app.state.store, settings.checklist_ttl_seconds, settings.checklist_link_type, settings.smart_launch_url
        )
        salt = settings.patient_id_salt.get_secret_value() if settings.patient_id_salt else None
        dismissals = Dismissals(app.state.store, settings.override_days, settings.card_memory_hours, salt)
        app.state.matcher = Matcher(catalog, gatherer, settings.as_of, links, dismissals)
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

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings, jwt_client: httpx.AsyncClient) -> None:
    """Outermost last: CORS answers preflights before auth; the body limit applies before anything reads
    the body; NoTraceback catches whatever escapes every other layer; the access log sees every answer."""
    app.add_middleware(RequireJsonBody)
    if settings.auth_required:
        authenticator = Authenticator(
            {i.iss: i for i in settings.issuers},
            settings.public_url,  # type: ignore[arg-type]
            JwksCache(
                jwt_client,
                min_refresh=settings.jwks_min_refresh_seconds,
                failure_backoff=settings.jwks_failure_backoff_seconds,
                max_wait=settings.jwks_max_wait_seconds,
            ),
            leeway=settings.jwt_leeway_seconds,
            max_lifetime=settings.jwt_max_lifetime_seconds,
            replay=SharedReplay(app),
            max_token_bytes=settings.max_token_bytes,
        )
        app.add_middleware(RequireClientJwt, authenticator=authenticator)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    if settings.cors or settings.cors_origin_regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors,
            allow_origin_regex=settings.cors_origin_regex,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(NoTraceback)

    app.add_middleware(AccessLog)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The message of an unexpected error may quote input: log its type only, answer nothing specific.
        log.error("unexpected error", extra={"error_type": type(exc).__name__})
        return error(500, "internal error")

    @functools.cache
    def names() -> frozenset[str]:  # built at the first 400, when every route is in place
        return defined_names(app.openapi())

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold patient data or a token.
        return error(400, "invalid request", details=said_back(exc.errors(), names()))
