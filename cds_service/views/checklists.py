"""Checklist pages: the criterion-by-criterion detail behind a card, for the research coordinator.

A card links to /checklist/<token>: 256 random bits, no patient data in the URL,
valid for TRIAL_MATCHER_CHECKLIST_TTL_SECONDS. The page is rendered on the
server from a snapshot taken when the card was made (templates autoescape every
value: criterion text and evidence are data, never markup).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cds_service.eligibility.report import TrialResult
from cds_service.eligibility.trials import Trial

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
OUTCOME_LABEL = {"pass": "Met", "fail": "Not met", "unknown": "Data missing", "review": "Needs review"}
STATUS_LABEL = {
    "likely-eligible": "Likely eligible",
    "possibly-eligible": "Possibly eligible",
    "ineligible": "Not eligible",
}
# Served with every checklist page and error page: never cached, never leaked by referrer, no scripts at all.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # browsers without frame-ancestors: the page cannot be framed (clickjacking)
}

# A snapshot is stored per card and read by a person: a record with 120k Conditions made 12 MB ones. Each
# criterion keeps its first evidence items (the engine orders them: the deciding ones first) and says how
# many more there were; gaps keep their first lines and a count; long text is cut with an ellipsis.
MAX_EVIDENCE = 20
MAX_GAPS = 30
MAX_TEXT = 500

_env = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
)


def new_token() -> tuple[str, str]:
    """A link token and the hash stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def snapshot(trial: Trial, result: TrialResult, patient: str, as_of: date, gaps: list[str]) -> bytes:
    """What the page shows, frozen at card time."""
    return orjson.dumps(
        {
            "trial": {
                "id": trial.id,
                "title": trial.title,
                "sponsor": trial.sponsor,
                "phase": trial.phase,
                "status": trial.status,
                "url": trial.url,
                "sites": [", ".join(x for x in (s.name, s.city, s.region, s.country) if x) for s in trial.sites],
            },
            "result": bounded(result.model_dump(mode="json", exclude_none=True)),
            "patient": patient,
            "as_of": as_of.isoformat(),
            "gaps": _first(gaps, MAX_GAPS, "more gaps not listed"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def bounded(result: dict[str, Any]) -> dict[str, Any]:
    """A trial result as a snapshot holds it: at most MAX_EVIDENCE items per criterion (and cohort), the
    number left out said in the criterion's explanation, and every evidence text at most MAX_TEXT long."""
    for part in [*result.get("criteria", []), *([result["cohort"]] if result.get("cohort") else [])]:
        evidence = part.get("evidence", [])
        left_out = len(evidence) - MAX_EVIDENCE
        part["evidence"] = [_short_evidence(e) for e in evidence[:MAX_EVIDENCE]]
        if left_out > 0:
            note = f"{left_out} more evidence item(s) on record are not listed here."
            key = "reason" if "reason" in part else "explanation"  # the cohort has a reason, a criterion an explanation
            part[key] = f"{part[key]} {note}" if part.get(key) else note
    return result


def _short_evidence(e: dict[str, Any]) -> dict[str, Any]:
    return {k: (v[:MAX_TEXT] + "…" if isinstance(v, str) and len(v) > MAX_TEXT else v) for k, v in e.items()}


def _first(items: list[str], n: int, rest: str) -> list[str]:
    short = [x[:MAX_TEXT] + "…" if len(x) > MAX_TEXT else x for x in items[:n]]
    return short + ([f"{len(items) - n} {rest}"] if len(items) > n else [])


def rows_for(items: list[tuple[str, bytes]], ttl: float) -> list[tuple[str, float, str]]:
    expires = time.time() + ttl
    return [(h, expires, payload.decode()) for h, payload in items]


def render_checklist(payload: str) -> str:
    data: dict[str, Any] = orjson.loads(payload)
    criteria = data["result"]["criteria"]
    return _env.get_template("checklist.html").render(
        **data,
        inclusion=[c for c in criteria if c["type"] == "inclusion"],
        exclusion=[c for c in criteria if c["type"] == "exclusion"],
        missing=list(dict.fromkeys(m for c in criteria for m in c.get("missing", []))),
        review=[c for c in criteria if c["outcome"] == "review"],
        counts={o: sum(c["outcome"] == o for c in criteria) for o in OUTCOME_LABEL},
        outcome_label=OUTCOME_LABEL,
        status_label=STATUS_LABEL,
    )


def render_error(status: int) -> str:
    if status == 410:
        title, text = (
            "This checklist link has expired",
            (
                "Checklist links are short-lived to protect patient data. Open the patient's chart again to get a "
                "fresh card and link."
            ),
        )
    else:
        title, text = (
            "This checklist link is not valid",
            (
                "The link may be mistyped, or it was never issued by this service. Open the patient's chart again "
                "to get a fresh card and link."
            ),
        )
    return _env.get_template("error.html").render(title=title, text=text, status=status)
