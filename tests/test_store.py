"""Feedback storage on real databases: SQLite, and PostgreSQL started here when its binaries exist."""

from __future__ import annotations

import asyncio
import time

import pytest

from cds_service.api.models import FeedbackItem
from cds_service.store import open_store

ITEMS = [
    FeedbackItem(
        card="c1", outcome="accepted", acceptedSuggestions=[{"id": "s1"}], outcomeTimestamp="2026-11-23T10:00:00Z"
    ),
    FeedbackItem(
        card="c2",
        outcome="overridden",
        overrideReason={"reason": {"code": "declined"}, "userComment": "no"},
        outcomeTimestamp="2026-11-23T10:01:00Z",
    ),
]


async def _roundtrip(url: str) -> None:
    store = open_store(url)
    try:
        before = await store.count()
        assert await store.add("trial-matcher", ITEMS) == 2
        assert await store.count() == before + 2
        rows = await store.recent(2)
        assert [r["card"] for r in rows] == ["c2", "c1"]
        assert rows[0]["override_reason"] == {"reason": {"code": "declined"}, "userComment": "no"}
        assert rows[1]["accepted_suggestions"] == ["s1"]
        assert await store.recent(5, service_id="other") == []
        # checklists: stored by token hash; expired ones keep their hash (for 410) but lose the snapshot
        now = time.time()
        await store.put_checklists([("live-hash", now + 600, '{"x": 1}'), ("old-hash", now - 5, '{"x": 2}')])
        assert await store.get_checklist("live-hash") == (pytest.approx(now + 600), '{"x": 1}')
        store._purge._last = 0.0  # a minute has passed: the next write purges
        await store.put_checklists([("next-hash", now + 600, "{}")])
        expires, payload = await store.get_checklist("old-hash")
        assert payload is None and expires < now
        assert await store.get_checklist("never-issued") is None
        # paging the admin listing: `before` continues below the last id seen
        first = await store.recent(1)
        older = await store.recent(1, before=first[0]["id"])
        assert older[0]["id"] < first[0]["id"] and older[0]["card"] == "c1"
        # client JWT ids: claimed once, by whichever connection comes first; an expired claim is forgotten
        jti = f"jti-{time.time_ns()}"
        assert await store.claim_jti("iss", jti, now + 300) is True
        assert await store.claim_jti("iss", jti, now + 300) is False
        other = open_store(url)  # a second worker or instance on the same database
        try:
            assert await other.claim_jti("iss", jti, now + 300) is False
            assert await other.claim_jti("other-iss", jti, now + 300) is True
            assert await other.claim_jti("iss", f"{jti}-old", now - 1) is True
            assert await store.claim_jti("iss", f"{jti}-old", now + 300) is True  # the old claim had expired
        finally:
            await other.close()
    finally:
        await store.close()


def test_sqlite_store_persists_across_reopen(tmp_path):
    url = f"sqlite:///{tmp_path}/sub/fb.sqlite3"
    asyncio.run(_roundtrip(url))

    async def reopen() -> int:
        store = open_store(url)
        n = await store.count()
        await store.close()
        return n

    assert asyncio.run(reopen()) == 2


def test_sqlite_commits_what_a_hook_writes_without_fsync_and_what_a_clinician_sends_with_it(tmp_path):
    """Checklists and the cards a chart was shown are written at every hook and made again at the next chart
    opening: committed under synchronous=NORMAL (no fsync). Feedback, and the dismissals it asks for, commit
    under FULL, which the connection is always back to."""
    store = open_store(f"sqlite:///{tmp_path}/fb.sqlite3")
    said: list[str] = []
    store._conn.set_trace_callback(said.append)

    def modes_at_commit() -> list[str]:
        mode, modes = "FULL", []
        for sql in said:
            if sql.startswith("PRAGMA synchronous="):
                mode = sql.split("=", 1)[1]
            elif sql == "COMMIT":
                modes.append(mode)
        said.clear()
        return modes

    async def run() -> None:
        try:
            await store.remember_cards([("card-1", "subject", "trial", time.time() + 600)])
            assert modes_at_commit() == ["NORMAL"]
            await store.put_checklists([("hash", time.time() + 600, "{}")])
            assert modes_at_commit() == ["NORMAL"]
            await store.add("trial-matcher", ITEMS, dismiss_seconds=600)
            assert modes_at_commit() == ["FULL"]
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        finally:
            await store.close()

    asyncio.run(run())


def test_unknown_database_url_is_refused():
    with pytest.raises(ValueError, match="sqlite"):
        open_store("mysql://x")


def test_postgres_store(postgres_dsn):
    asyncio.run(_roundtrip(postgres_dsn))
