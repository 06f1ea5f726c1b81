"""Dismissed means dismissed: an `overridden` card, with a reason, keeps that trial's card off that
patient's chart for `TRIAL_MATCHER_OVERRIDE_DAYS`, across workers and instances (the shared store).

CDS Hooks feedback names only the card's uuid, so each patient-view card is remembered with its trial and
a keyed hash of the patient id for `TRIAL_MATCHER_CARD_MEMORY_HOURS` (feedback comes within minutes; the
memory is short). The key is `TRIAL_MATCHER_PATIENT_ID_SALT` when set, else a random key kept in the store
(so every worker and instance hashes alike, and the hash is no lookup table of patient ids by itself).
Other trials and other patients are not affected; `/match` and the checklist still show the trial,
marked as dismissed on that date.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from cds_service.eligibility.report import Dismissal

if TYPE_CHECKING:  # the API's models only name a type here: a screen that stores its run never imports them
    from cds_service.api.models import FeedbackItem

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS card_issued (card TEXT PRIMARY KEY, subject TEXT NOT NULL, trial TEXT NOT NULL,"
    " expires_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS card_issued_expires ON card_issued (expires_at)",
    "CREATE TABLE IF NOT EXISTS dismissal (subject TEXT NOT NULL, trial TEXT NOT NULL,"
    " until DOUBLE PRECISION NOT NULL, reason TEXT, dismissed_at TEXT NOT NULL, PRIMARY KEY (subject, trial))",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def key_statements(p: str) -> list[tuple[str, tuple]]:
    """Create the store's hashing key once (the first worker wins), then read it."""
    return [
        (
            f"INSERT INTO meta (name, value) VALUES ('subject_key', {p}) ON CONFLICT DO NOTHING",
            (secrets.token_hex(32),),
        ),
        ("SELECT value FROM meta WHERE name = 'subject_key'", ()),
    ]


def remember_statements(p: str, rows: list[tuple[str, str, str, float]]) -> list[tuple[str, list[tuple]]]:
    """Remember issued cards (card uuid, subject hash, trial, expiry) and forget expired ones."""
    return [
        (f"DELETE FROM card_issued WHERE expires_at < {p}", [(time.time(),)]),
        (f"INSERT INTO card_issued (card, subject, trial, expires_at) VALUES ({p}, {p}, {p}, {p})", rows),
    ]


def dismiss_statements(p: str, items: list[FeedbackItem], seconds: float) -> list[tuple[str, list[tuple]]]:
    """For each overridden card with a reason: dismiss its trial for its patient until now + `seconds`."""
    now = time.time()
    at = datetime.now(UTC).date().isoformat()
    rows = [
        (now + seconds, _reason(i), at, i.card, now)
        for i in items
        if i.outcome == "overridden" and i.overrideReason is not None
    ]
    if not rows:
        return []
    sql = (
        f"INSERT INTO dismissal (subject, trial, until, reason, dismissed_at) SELECT subject, trial, {p}, {p}, {p}"
        f" FROM card_issued WHERE card = {p} AND expires_at > {p}"
        " ON CONFLICT (subject, trial) DO UPDATE SET until = excluded.until, reason = excluded.reason,"
        " dismissed_at = excluded.dismissed_at"
    )
    return [(sql, rows)]


def active_query(p: str, subject: str) -> tuple[str, tuple]:
    return (f"SELECT trial, until, reason, dismissed_at FROM dismissal WHERE subject = {p} AND until > {p}",
            (subject, time.time()))  # fmt: skip


def _reason(item: FeedbackItem) -> str | None:
    reason = item.overrideReason.reason if item.overrideReason else None
    return (reason.code or reason.display) if reason is not None else None


def decode(rows: list[tuple[Any, ...]]) -> dict[str, Dismissal]:
    return {
        str(trial): Dismissal(
            on=date.fromisoformat(str(at)),
            until=datetime.fromtimestamp(float(until), UTC).date(),
            reason=str(reason) if reason else None,
        )
        for trial, until, reason, at in rows
    }


@dataclass
class Dismissals:
    """What the hook and the feedback route ask of the store about dismissed cards."""

    store: Any  # cds_service.store.Store
    override_days: float = 90
    memory_hours: float = 72
    salt: str | None = None

    async def subject(self, patient_id: str) -> str:
        key = self.salt or await self.store.subject_key()
        return hmac.new(key.encode(), patient_id.encode(), hashlib.sha256).hexdigest()

    async def active(self, patient_id: str) -> dict[str, Dismissal]:
        return await self.store.dismissals(await self.subject(patient_id))

    async def remember(self, patient_id: str, cards: list[tuple[str, str]]) -> None:
        """(card uuid, trial) of the cards just shown to this patient's chart."""
        if cards:
            subject, expires = await self.subject(patient_id), time.time() + self.memory_hours * 3600
            await self.store.remember_cards([(card, subject, trial, expires) for card, trial in cards])

    async def feedback(self, service_id: str, items: list[FeedbackItem]) -> int:
        return await self.store.add(service_id, items, dismiss_seconds=self.override_days * 86400)
