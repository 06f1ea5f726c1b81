"""Render trial results as CDS Hooks cards.

One card per trial the patient is likely or possibly eligible for (and has not had
dismissed), likely first. The detail is a few lines a clinician reads at a glance:
the trial, how many criteria are met, what to order or record, and any date a bar
lifts. The checklist behind the card's link holds every criterion with its evidence
and the study team's review list. A suggestion creates a referral to the research team.
"""

from __future__ import annotations

from cds_service.api.models import Card, Coding, Link, Source
from cds_service.eligibility.report import TrialResult
from cds_service.eligibility.trials import Trial
from cds_service.views.markdown import md_escape
from cds_service.views.referral import referral

# CDS Hooks 2.0 overrideReasons: an overridden card with one of these keeps the trial off this patient's
# chart for TRIAL_MATCHER_OVERRIDE_DAYS (cds_service/dismissals.py)
DISMISS = "https://trial-matcher.org/fhir/CodeSystem/card-dismissal"
OVERRIDE_REASONS = [
    Coding(system=DISMISS, code="already-screened", display="Already screened for this trial"),
    Coding(system=DISMISS, code="patient-declined", display="Patient declined the trial"),
    Coding(system=DISMISS, code="not-appropriate-now", display="Not appropriate now"),
    Coding(system=DISMISS, code="not-a-candidate", display="Not a trial candidate in my judgement"),
]
STATUS_WORDS = {"likely-eligible": "likely eligible", "possibly-eligible": "possibly eligible"}
_ORDER = {"likely-eligible": 0, "possibly-eligible": 1}


def _short(text: str, n: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def summary(trial: Trial, result: TrialResult) -> str:
    words = STATUS_WORDS[result.status]
    if result.eligible_from:
        words += f" from {result.eligible_from.isoformat()}"
    label = trial.short_title or trial.title
    head = f"Trial match, {words}: {trial.id}"
    room = 139 - len(head) - 3
    return f"{head} – {_short(label, room)}" if room > 20 else head[:139]


def _short_list(items: list[str], room: int) -> str:
    """As many items as fit in `room` characters, then "and N more" (the checklist lists them all)."""
    out: list[str] = []
    for i, item in enumerate(items):
        rest = len(items) - i - 1
        tail = f", and {rest} more" if rest else ""
        if out and len("; ".join([*out, item])) + len(tail) > room:
            return "; ".join(out) + f", and {len(items) - i} more"
        out.append(item)
    return "; ".join(out)


def _missing_label(text: str) -> str:
    """What to order or record, without the reasoning or the codes: "HBV DNA" of
    "HBV DNA (IU/mL) (LOINC 42595-9): none in the last 3 months"."""
    return _short(text.split(":", 1)[0].split(" (", 1)[0], 48)


def detail(trial: Trial, result: TrialResult, gaps: list[str]) -> str:
    """Read in five seconds between other tasks: the trial, how sure we are, what can be done now (data to
    order or record, the date a bar lifts). Every criterion, its evidence and the study team's review list
    are one click away, in the checklist behind the card's link."""
    crit = result.criteria
    met = sum(1 for c in crit if c.outcome == "pass")
    review = sum(1 for c in crit if c.outcome == "review")
    phase = f"{md_escape(trial.phase)}. " if trial.phase.lower().startswith(("phase", "early phase")) else ""
    stand = f"; {review} for the study team to confirm." if review else "."
    lines = [f"{phase}{met} of {len(crit)} criteria met{stand}"]  # the summary names the trial
    if result.eligible_from:
        bars = [c for c in crit if c.outcome == "fail" and c.until]
        why = "; ".join(_short((c.explanation or c.id).split("; clear from")[0], 80) for c in bars[:2])
        lines += ["", f"**Not before {result.eligible_from.isoformat()}**: {md_escape(why)}."]
    wanted = list(dict.fromkeys(_missing_label(m) for m in result.missing))
    if wanted:
        lines += ["", "**Order or record:** " + md_escape(_short_list(wanted, 200)) + "."]
    if result.notes:  # caveats of the trial's source or the record a clinician must see (never cut)
        lines += ["", "**Note:** " + md_escape("; ".join(result.notes)) + "."]
    if gaps:  # what could not be read is treated as unknown, so the card says what it was (never cut)
        lines += ["", "**Not all data could be read:** " + md_escape("; ".join(gaps)) + "."]
    lines += ["", "The study team confirms eligibility; details in the checklist."]
    return "\n".join(lines)


# CDS Hooks asks extension keys to be namespaced (reverse domain name); ours sit under one key.
EXTENSION_KEY = "org.trialmatcher"


def card_for(
    trial: Trial, result: TrialResult, gaps: list[str], links: list[Link] | None = None, patient: str | None = None
) -> Card:
    ext: dict[str, str] = {"trialId": trial.id, "status": result.status}
    if result.eligible_from:
        ext["eligibleFrom"] = result.eligible_from.isoformat()
    checklist = next((x.url for x in links or [] if x.type == "absolute"), None)
    words = STATUS_WORDS[result.status]
    suggestions = (
        [referral(trial, patient, f"Possible candidate for {trial.id} ({words})", checklist)] if patient else None
    )
    return Card(
        summary=summary(trial, result),
        detail=detail(trial, result, gaps),
        indicator="info",
        source=Source(label=f"ClinicalTrials.gov {trial.id}", url=trial.url),
        suggestions=suggestions,
        selectionBehavior="at-most-one" if suggestions else None,  # CDS Hooks 2.0: required with suggestions
        overrideReasons=OVERRIDE_REASONS,
        links=[*(links or []), Link(label=f"{trial.id} on ClinicalTrials.gov", url=trial.url, type="absolute")],
        extension={EXTENSION_KEY: ext},
    )


def shown(results: list[TrialResult]) -> list[TrialResult]:
    """The results that get a card, in card order: likely first, then fewer unknowns."""
    out = [r for r in results if r.status in _ORDER and r.dismissed is None]  # dismissed: no card until it lapses
    out.sort(key=lambda r: (_ORDER[r.status], r.count("unknown"), r.id))
    return out


def cards_for(
    trials: dict[str, Trial],
    results: list[TrialResult],
    gaps: list[str],
    links: dict[str, list[Link]] | None = None,
    patient: str | None = None,
) -> list[Card]:
    """`patient` ("Patient/ID"): cards then suggest a referral the EHR can create."""
    return [card_for(trials[r.id], r, gaps, (links or {}).get(r.id), patient) for r in shown(results)]
