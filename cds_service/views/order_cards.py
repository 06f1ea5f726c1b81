"""Warning cards for draft orders that would close a trial to the patient."""

from __future__ import annotations

import uuid
from collections import defaultdict

from cds_service.api.models import Action, Card, Coding, Link, Source, Suggestion
from cds_service.eligibility.orders import Impact
from cds_service.eligibility.trials import Trial
from cds_service.views.cards import EXTENSION_KEY, _short
from cds_service.views.markdown import md_escape
from cds_service.views.referral import LOCAL, referral

OVERRIDE_REASONS = [
    Coding(system=LOCAL, code="clinically-urgent", display="Clinically urgent: the order cannot wait"),
    Coding(system=LOCAL, code="patient-declined-trial", display="Patient declined the trial"),
    Coding(system=LOCAL, code="not-a-trial-candidate", display="Not a trial candidate in my judgement"),
]


def _when(impacts: list[Impact]) -> str:
    if any(i.permanent for i in impacts):
        return "permanently"
    resume = max((i.resumes for i in impacts if i.resumes), default=None)
    return f"until {resume.isoformat()}" if resume else "for now"


def order_cards(trials: dict[str, Trial], impacts: list[Impact], patient: str, signing: bool = True) -> list[Card]:
    """One warning card per trial an order would close, naming the orders and the criteria. `signing`:
    order-sign's words ("Signing ... would close it"); order-select says "Ordering"."""
    by_trial: dict[str, list[Impact]] = defaultdict(list)
    for i in impacts:
        by_trial[i.trial].append(i)
    return [_card(trials[trial_id], items, patient, signing) for trial_id, items in sorted(by_trial.items())]


def _card(trial: Trial, items: list[Impact], patient: str, signing: bool) -> Card:
    names = ", ".join(dict.fromkeys(i.order.display for i in items))
    when = _when(items)
    head = f"Order would close trial {trial.id} {when}: "
    extension = {
        "trialId": trial.id,
        "status": items[0].status_before,
        "orderImpact": "permanent" if when == "permanently" else "temporary",
    }
    resume = max((i.resumes for i in items if i.resumes), default=None)
    if resume and when != "permanently":
        extension["eligibleFrom"] = resume.isoformat()
    return Card(
        summary=head + _short(names, 139 - len(head)),
        detail=_detail(trial, items, names, when, "signing" if signing else "ordering"),
        indicator="warning",
        source=Source(label=f"ClinicalTrials.gov {trial.id}", url=trial.url),
        suggestions=_suggestions(trial, items, names, patient),
        selectionBehavior="at-most-one",
        overrideReasons=OVERRIDE_REASONS,
        links=[Link(label=f"{trial.id} on ClinicalTrials.gov", url=trial.url, type="absolute")],
        extension={EXTENSION_KEY: extension},
    )


def _detail(trial: Trial, items: list[Impact], names: str, when: str, act: str) -> str:
    lifts = " (the bar lifts a fixed time after the last dose; a longer course moves the date)."
    lines = [
        f"The patient may be eligible for **{md_escape(trial.title)}** ({trial.id}, "
        f"{items[0].status_before.replace('-', ' ')}).",
        "",
        f"{act.capitalize()} {md_escape(names)} would close it **{when}**"
        + (lifts if when.startswith("until") else "."),
        "",
        "**Criteria the order would fail:**",
    ]
    alternatives = []
    for i in items:
        for c in i.criteria:
            crit = next(x for x in trial.criteria if x.id == c.id)
            until = f"eligible again {c.until.isoformat()}" if c.until else "permanent"
            lines.append(f"- **{c.type.capitalize()} {c.id}** ({until}): “{md_escape(_short(crit.text, 300))}”")
            if crit.alternatives:
                alternatives.append(crit.alternatives)
    if alternatives:
        lines += ["", "**The trial's own text allows:** " + md_escape(" ".join(dict.fromkeys(alternatives)))]
    lines += ["", f"Consider talking to the trial's research coordinator before {act}."]
    return "\n".join(lines)


def _suggestions(trial: Trial, items: list[Impact], names: str, patient: str) -> list[Suggestion]:
    reason = f"Possible candidate for {trial.id}; a pending order may close the trial"
    return [
        referral(trial, patient, reason),
        Suggestion(
            label=f"Remove {_short(names, 60)} from this order",
            uuid=str(uuid.uuid4()),
            actions=[  # one delete action per order: resourceId is a single relative reference
                Action(type="delete", description="Remove the draft order", resourceId=ref)
                for ref in sorted({i.order.reference for i in items})
            ],
        ),
    ]
