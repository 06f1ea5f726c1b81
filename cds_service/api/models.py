"""CDS Hooks 2.0 wire models: requests, cards, feedback, discovery.

Pydantic at the edge: a request that does not fit is rejected with 400 before
any work is done. The access token is a `SecretStr`, so it never appears in a
repr, a log line or an error message.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from cds_service.fhir.urls import Origin, UnsafeUrl


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: SecretStr = Field(max_length=16_384)
    token_type: str = Field("Bearer", max_length=32)
    expires_in: int | None = None
    scope: str | None = Field(None, max_length=4096)
    subject: str | None = Field(None, max_length=1024)

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, v: str) -> str:
        if v.lower() != "bearer":
            raise ValueError("token_type must be Bearer")
        return v


PATIENT_ID = r"^[A-Za-z0-9\-.]{1,64}$"


def _is_resource(value: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value.get("resourceType"), str) or not value["resourceType"]:
        raise ValueError("a FHIR resource needs a resourceType")
    return value


# A FHIR resource as JSON: checked for a resourceType only, and passed on as the dict it is (validating a
# multi-MB prefetch into models would cost more than the evaluation; the reader type-checks what it reads).
FhirResource = Annotated[
    dict[str, Any],
    AfterValidator(_is_resource),
    WithJsonSchema(
        {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string", "minLength": 1}},
            "additionalProperties": True,
        }
    ),
]


class BundleEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    fullUrl: str | None = None
    resource: FhirResource | None = None


# Orders a clinician signs at once are a handful; each is checked against every trial (about 18 ms of CPU),
# so 500 cost 8.9 s. Above this the request is 400, before any work: no hook's budget holds more.
MAX_DRAFT_ORDERS = 50


class DraftOrders(BaseModel):
    """`context.draftOrders`: a Bundle of the orders being written (at most MAX_DRAFT_ORDERS)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: str | None = None
    entry: list[BundleEntry] = Field(default_factory=list, max_length=MAX_DRAFT_ORDERS)


class PatientViewContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    patientId: str = Field(min_length=1, max_length=64, pattern=PATIENT_ID)
    userId: str | None = Field(None, max_length=256)
    encounterId: str | None = Field(None, max_length=256)


class OrderContext(PatientViewContext):
    """order-select and order-sign context: the patient and the orders being written."""

    selections: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=MAX_DRAFT_ORDERS)
    draftOrders: DraftOrders


class _HookRequestBase(BaseModel):
    """What every CDS Hooks call carries; `hook` and `context` are typed per hook below."""

    model_config = ConfigDict(extra="allow")

    hookInstance: uuid.UUID
    fhirServer: str | None = Field(None, max_length=2048, description="FHIR base URL, on the service's allow-list")
    fhirAuthorization: FhirAuthorization | None = None
    prefetch: dict[Annotated[str, Field(max_length=64)], FhirResource | None] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return Origin.parse(v).url  # http(s), no userinfo, query, fragment or dot segments
        except UnsafeUrl as e:
            raise ValueError(f"fhirServer: {e}") from None

    @model_validator(mode="after")
    def _pairing(self) -> _HookRequestBase:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirAuthorization was sent without fhirServer (CDS Hooks 2.0 cds-r-1)")
        return self


class PatientViewRequest(_HookRequestBase):
    hook: Literal["patient-view"]
    context: PatientViewContext


class OrderSelectRequest(_HookRequestBase):
    hook: Literal["order-select"]
    context: OrderContext


class OrderSignRequest(_HookRequestBase):
    hook: Literal["order-sign"]
    context: OrderContext


HookRequest = Annotated[
    PatientViewRequest | OrderSelectRequest | OrderSignRequest,
    Field(discriminator="hook", description="A CDS Hooks 2.0 call to one of the hooks in discovery"),
]


# --- responses ------------------------------------------------------------------------------------------


class Coding(BaseModel):
    system: str | None = Field(None, max_length=1024)
    code: str = Field(max_length=256)
    display: str | None = Field(None, max_length=1024)


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
    resourceId: str | None = None  # CDS Hooks 2.0: a relative reference ("MedicationRequest/draft-1")


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


# Feedback is stored: every field has a length cap and unknown fields are dropped, so one request
# cannot fill the database (100 items of at most a few KB each).
class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=4000)


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(None, max_length=20)
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(min_length=4, max_length=64)

    @model_validator(mode="after")
    def _accepted_names_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("outcome 'accepted' needs acceptedSuggestions (CDS Hooks 2.0 feedback)")
        return self


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


# --- REST ----------------------------------------------------------------------------------------------


class PatientBundle(BaseModel):
    """A FHIR Bundle holding one patient's resources (any Bundle type)."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle"]
    type: str | None = None
    entry: list[BundleEntry] | None = None
