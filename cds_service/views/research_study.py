"""A trial as a FHIR R4 ResearchStudy, its criteria in a contained enrollment Group."""

from __future__ import annotations

from typing import Any

from cds_service.eligibility.trials import Trial

STATUS = {
    "recruiting": "active",
    "active - recruiting": "active",
    "enrolling": "active",
    "not yet recruiting": "approved",
    "completed": "completed",
}


def research_study(trial: Trial) -> dict[str, Any]:
    group = {
        "resourceType": "Group",
        "id": "enrollment",
        "type": "person",
        "actual": False,
        "name": f"Eligibility criteria of {trial.id}",
        "characteristic": [
            {
                "code": {"text": f"{c.type} {c.id}"},
                "valueCodeableConcept": {"text": c.text},
                "exclude": c.type == "exclusion",
            }
            for c in trial.criteria
        ],
    }
    study: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "id": trial.id,
        "identifier": [{"system": "https://clinicaltrials.gov", "value": trial.id}],
        "title": trial.title,
        "status": STATUS.get(trial.status.lower(), "active"),
        "phase": {"text": trial.phase},
        "condition": [{"text": c} for c in trial.conditions],
        "sponsor": {"display": trial.sponsor},
        "relatedArtifact": [{"type": "documentation", "label": "ClinicalTrials.gov", "url": trial.url}],
        "contained": [group],
        "enrollment": [{"reference": "#enrollment"}],
    }
    locations = [{"text": ", ".join(x for x in (s.name, s.city, s.region, s.country) if x)} for s in trial.sites]
    if locations:
        study["location"] = locations
    return study
