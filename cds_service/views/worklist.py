"""The worklist pages: the coordinator's lists from the stored screens, and one stored row's checklist.

Server-rendered like the checklist (templates autoescape every value; no scripts). The pages are behind
the admin token; patients are named as the store holds them (ids as given or the site's pseudonyms),
and links carry the stored row's number, never a patient id.
"""

from __future__ import annotations

from typing import Any

from cds_service.eligibility.trials import Trial
from cds_service.views.checklists import OUTCOME_LABEL, STATUS_LABEL, _env
from cds_service.worklist.changes import LISTS, Worklist
from cds_service.worklist.log import quoted
from cds_service.worklist.runs import Run, StoredRow

LIST_TITLE = {
    "newly-eligible": "Newly eligible since the previous screen",
    "bar-lifts-soon": "Bar lifts soon",
    "no-longer-eligible": "No longer eligible",
}
LIST_HELP = {
    "newly-eligible": "Likely or possibly eligible now, and not at the previous screen: a new patient in the "
    "cohort, a washout that lifted, new results.",
    "bar-lifts-soon": "Possibly eligible once a temporary bar lifts, on the date shown.",
    "no-longer-eligible": "Eligible at the previous screen, not now: the criterion that changed is named.",
}
# The same headers as the checklist, but the login form posts to this service.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


EXTRA_LABELS = {"not-assessed": "Not assessed", "not-on-record": "No longer on record"}


def render_worklist(wl: Worklist, trials: dict[str, Trial], trial: str | None) -> str:
    sections: list[dict[str, Any]] = []
    for name in LISTS:
        entries = [e for e in wl.entries if e.list == name]
        by_trial: dict[str, list] = {}
        for e in entries:
            by_trial.setdefault(e.trial, []).append(e)
        sections.append({"name": name, "title": LIST_TITLE[name], "help": LIST_HELP[name], "by_trial": by_trial})
    return _env.get_template("worklist.html").render(
        wl=wl,
        sections=sections,
        trials=trials,
        selected=trial,
        status_label=STATUS_LABEL | EXTRA_LABELS,
        criterion_text=lambda t, c: criterion_text(trials.get(t), c),
    )


def criterion_text(trial: Trial | None, criterion: str) -> str:
    """A worklist entry's criterion (one id, `cohort entry`, or none) as the trial file quotes it."""
    return (quoted(trial, criterion) if trial is not None and criterion else None) or ""


def render_row(run: Run, row: StoredRow, trial: Trial | None) -> str:
    outcomes = dict(pair.split("=", 1) for pair in row.outcomes.split(";") if "=" in pair)
    criteria = [
        {"id": c.id, "type": c.type, "text": c.text, "outcome": outcomes.get(c.id)}
        for c in (trial.criteria if trial is not None else [])
    ]
    return _env.get_template("worklist_row.html").render(
        run=run,
        row=row,
        trial=trial,
        criteria=criteria,
        outcome_label=OUTCOME_LABEL,
        status_label=STATUS_LABEL | EXTRA_LABELS,
    )


def render_login(failed: bool = False) -> str:
    return _env.get_template("worklist_login.html").render(failed=failed)
