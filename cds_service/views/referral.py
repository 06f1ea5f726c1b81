"""The referral an EHR can carry out: a CDS Hooks 2.0 `create` action of a draft ServiceRequest that
refers the patient to the trial's research team, naming the trial and, when there is one, the checklist."""

from __future__ import annotations

import uuid

from cds_service.api.models import Action, Suggestion
from cds_service.eligibility.trials import Trial

LOCAL = "https://trial-matcher.org/fhir/CodeSystem/order-check"
REFERRAL_DISPLAY = "Referral to clinical trial research coordinator"


def referral(trial: Trial, patient: str, reason: str, checklist_url: str | None = None) -> Suggestion:
    """A recommended suggestion whose one action creates the referral (status draft: the clinician signs)."""
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {
            "coding": [{"system": LOCAL, "code": "trial-referral", "display": REFERRAL_DISPLAY}],
            "text": f"Referral to the research coordinator of {trial.id}",
        },
        "subject": {"reference": patient},
        "reasonCode": [{"text": reason}],
        "supportingInfo": [{"display": f"{trial.id}: {trial.label}"}],
        "note": [
            {"text": f"Trial: {trial.url}" + (f"; eligibility checklist: {checklist_url}" if checklist_url else "")}
        ],
    }
    return Suggestion(
        label=f"Refer to the {trial.id} research coordinator",
        uuid=str(uuid.uuid4()),
        isRecommended=True,
        actions=[Action(type="create", description=f"Referral to the {trial.id} research team", resource=resource)],
    )
