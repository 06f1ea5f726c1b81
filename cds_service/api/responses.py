"""What every router shares: orjson in and out, one error shape, documented error responses, and the
objects the app holds (through `Depends`, so a router never reaches into globals)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from cds_service.eligibility.catalog import Catalog
from cds_service.pipeline import Matcher
from cds_service.settings import Settings
from cds_service.store import Store

FHIR_JSON = "application/fhir+json"


class ErrorBody(BaseModel):
    error: str
    details: list[dict[str, Any]] | None = None
    reasons: list[str] | None = None


_ERROR_TEXT = {
    400: "Malformed JSON, wrong hook, missing context or invalid fields",
    401: "Missing or invalid client JWT (no detail given)",
    404: "Unknown service, trial or disabled endpoint",
    412: "The patient's data could be neither prefetched nor fetched",
    413: "Request body too large",
    415: "The body is not JSON (Content-Type application/json)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these status codes, all in the one error shape."""
    return {c: {"model": ErrorBody, "description": _ERROR_TEXT[c]} for c in codes}


class JsonBytes(JSONResponse):
    """JSON rendered by orjson (the hook's cards, reports of every criterion)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
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


# --- shared objects, for Depends --------------------------------------------------------------------


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def get_matcher(request: Request) -> Matcher:
    return request.app.state.matcher


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings
