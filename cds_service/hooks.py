"""CDS Hooks 2.0 wire models: requests, cards, feedback, discovery.

Pydantic at the edge: a request that does not fit is rejected with 400 before
any work is done. The access token is a `SecretStr`, so it never appears in a
repr, a log line or an error message.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: SecretStr
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, v: str) -> str:
        if v.lower() != "bearer":
            raise ValueError("token_type must be Bearer")
        return v


class PatientViewContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    patientId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    userId: str | None = None
    encounterId: str | None = None


class OrderContext(BaseModel):
    """order-select and order-sign context: the patient and the orders being written."""

    model_config = ConfigDict(extra="allow")

    patientId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    userId: str | None = None
    encounterId: str | None = None
    selections: list[str] | None = None
    draftOrders: dict[str, Any]

    @field_validator("draftOrders")
    @classmethod
    def _bundle(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        return v


class HookRequest(BaseModel):
    """A CDS Hooks call. `context` is validated per hook by the service that receives it."""

    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1)
    hookInstance: uuid.UUID
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("fhirServer must be an http(s) URL")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _pairing(self) -> HookRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirAuthorization was sent without fhirServer (CDS Hooks 2.0 cds-r-1)")
        return self


# --- responses ------------------------------------------------------------------------------------------


class Coding(BaseModel):
    system: str | None = None
    code: str
    display: str | None = None


class Source(BaseModel):
    label: str = Field(min_length=1)
    url: str | None = None
    topic: Coding | None = None


class Link(BaseModel):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"] = "absolute"
    appContext: str | None = None


class Action(BaseModel):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: list[str] | None = None


class Suggestion(BaseModel):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Card(BaseModel):
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"] = "info"
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None


class CardsResponse(BaseModel):
    cards: list[Card]

    def wire(self) -> dict[str, Any]:
        """JSON for the wire: no nulls, no empty strings, no empty arrays (CDS Hooks forbids them)."""
        return {"cards": [_prune(c.model_dump(mode="json")) for c in self.cards]}


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value if v not in (None, "", [], {})]
    return value


# --- discovery --------------------------------------------------------------------------------------------


class ServiceDescription(BaseModel):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str | None = None


class Discovery(BaseModel):
    services: list[ServiceDescription]


# --- feedback --------------------------------------------------------------------------------------------


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=4000)


class AcceptedSuggestion(BaseModel):
    id: str


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(min_length=4, max_length=64)


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


# --- REST ----------------------------------------------------------------------------------------------


class BundleEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    resource: dict[str, Any] | None = None


class PatientBundle(BaseModel):
    """A FHIR Bundle holding one patient's resources (any Bundle type)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: str | None = None
    entry: list[BundleEntry] | None = None
