"""Render trial results as CDS Hooks cards.

One card per trial the patient is likely or possibly eligible for, likely
first. The detail is Markdown for the research coordinator: what is met, what
data is missing (so staff know what to order or record), what a person must
review, and any temporary bar with the date it lifts.
"""

from __future__ import annotations

from cds_service.api.models import Card, Coding, Link, Source
from cds_service.eligibility.report import CriterionResult, TrialResult
from cds_service.eligibility.trials import Trial

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
MAX_ITEMS = 12


def _short(text: str, n: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _md_escape(text: str) -> str:
    """Criterion text is data: keep Markdown from interpreting it."""
    for ch in ("\\", "*", "_", "`", "[", "]", "<", ">", "#", "|"):
        text = text.replace(ch, "\\" + ch)
    return text


def summary(trial: Trial, result: TrialResult) -> str:
    words = STATUS_WORDS[result.status]
    if result.eligible_from:
        words += f" from {result.eligible_from.isoformat()}"
    label = trial.short_title or trial.title
    head = f"Trial match, {words}: {trial.id}"
    room = 139 - len(head) - 3
    return f"{head} – {_short(label, room)}" if room > 20 else head[:139]


def _bullets(items: list[str]) -> list[str]:
    shown = items[:MAX_ITEMS]
    lines = [f"- {x}" for x in shown]
    if len(items) > MAX_ITEMS:
        lines.append(f"- … and {len(items) - MAX_ITEMS} more")
    return lines


def _criterion_line(c: CriterionResult, extra: str = "") -> str:
    kind = "Inclusion" if c.type == "inclusion" else "Exclusion"
    line = f"**{kind} {c.id}**: {_md_escape(_short(c.text))}"
    return f"{line} — {_md_escape(extra)}" if extra else line


def detail(trial: Trial, result: TrialResult, gaps: list[str]) -> str:
    crit = result.criteria
    met = [c for c in crit if c.outcome == "pass"]
    unknown = [c for c in crit if c.outcome == "unknown"]
    review = [c for c in crit if c.outcome == "review"]
    temporary = [c for c in crit if c.outcome == "fail"]
    site = "; ".join(", ".join(x for x in (s.name, s.city, s.country) if x) for s in trial.sites) or "sites not listed"
    lines = [
        f"**{_md_escape(trial.title)}**",
        "",
        f"{_md_escape(trial.sponsor)} · {_md_escape(trial.phase)} · {_md_escape(trial.status)} · {_md_escape(site)}",
        "",
        f"Status: **{STATUS_WORDS[result.status]}** — {len(met)} of {len(crit)} criteria met, "
        f"{len(unknown)} need data, {len(review)} need review"
        + (f", {len(temporary)} temporarily not met" if temporary else "")
        + ".",
    ]
    if result.notes:
        lines += ["", "**Note:** " + _md_escape("; ".join(result.notes)) + "."]
    if temporary:
        lines += ["", f"**Not yet — eligible from {result.eligible_from.isoformat()}**"]  # type: ignore[union-attr]
        lines += _bullets(
            [_criterion_line(c, c.explanation or f"clear from {c.until.isoformat()}") for c in temporary if c.until]
        )
    if unknown:
        lines += ["", "**Data missing — order or record:**"]
        lines += _bullets([_md_escape(m) for m in result.missing])
    if review:
        lines += ["", "**Needs review by the study team:**"]
        lines += _bullets([_criterion_line(c, "; ".join(c.review)) for c in review])
    if met:
        lines += ["", "**Met:**"]
        lines += _bullets([_criterion_line(c, c.explanation or "") for c in met])
    if gaps:
        lines += ["", "**Not all data could be read:** " + _md_escape("; ".join(gaps)) + "."]
    lines += ["", "Eligibility is a screening suggestion from the record; the study team confirms it."]
    return "\n".join(lines)


# CDS Hooks asks extension keys to be namespaced (reverse domain name); ours sit under one key.
EXTENSION_KEY = "org.trialmatcher"


def card_for(trial: Trial, result: TrialResult, gaps: list[str], links: list[Link] | None = None) -> Card:
    ext: dict[str, str] = {"trialId": trial.id, "status": result.status}
    if result.eligible_from:
        ext["eligibleFrom"] = result.eligible_from.isoformat()
    return Card(
        summary=summary(trial, result),
        detail=detail(trial, result, gaps),
        indicator="info",
        source=Source(label=f"ClinicalTrials.gov {trial.id}", url=trial.url),
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
    trials: dict[str, Trial], results: list[TrialResult], gaps: list[str], links: dict[str, list[Link]] | None = None
) -> list[Card]:
    return [card_for(trials[r.id], r, gaps, (links or {}).get(r.id)) for r in shown(results)]
