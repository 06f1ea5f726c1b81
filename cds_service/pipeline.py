"""The pipeline behind every endpoint: gather -> normalize -> evaluate -> cards/report."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from cds_service.api.models import CardsResponse, FeedbackItem, Link
from cds_service.dismissals import Dismissals
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.orders import draft_orders, impacts
from cds_service.eligibility.report import Report
from cds_service.fhir.facts import PatientFacts
from cds_service.fhir.gather import Gathered, Gatherer
from cds_service.store import Store
from cds_service.views import checklists
from cds_service.views.cards import EXTENSION_KEY, cards_for, shown
from cds_service.views.order_cards import order_cards

log = logging.getLogger("trial_matcher")


class PreconditionFailed(Exception):
    """CDS Hooks 412: the data needed could be neither prefetched nor fetched."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class ChecklistLinks:
    """How cards link to their checklist: a page of this service, or a SMART app launch."""

    store: Store
    ttl_seconds: float = 3600
    link_type: str = "absolute"
    smart_launch_url: str | None = None

    def available(self, base_url: str | None) -> bool:
        """A link needs a trusted base URL of this service, unless it launches a configured SMART app."""
        return bool(base_url) or (self.link_type == "smart" and bool(self.smart_launch_url))

    def link(self, base_url: str | None, token: str) -> Link:
        label = "Eligibility checklist: criteria, evidence, missing data"
        if self.link_type == "smart":
            url = self.smart_launch_url or f"{base_url}/smart/launch"
            return Link(label=label, url=url, type="smart", appContext=orjson.dumps({"checklist": token}).decode())
        return Link(label=label, url=f"{base_url}/checklist/{token}", type="absolute")


def _mark_dismissed(report: Report, active: dict) -> None:
    """Each trial a clinician dismissed for this patient carries the dismissal (no card; still reported)."""
    for r in report.trials:
        r.dismissed = active.get(r.id)


@dataclass
class Matcher:
    catalog: Catalog
    gatherer: Gatherer
    fixed_as_of: date | None = None
    checklist: ChecklistLinks | None = None
    dismissals: Dismissals | None = None

    def today(self) -> date:
        return self.fixed_as_of or date.today()

    async def gather(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        whole: bool = True,
    ) -> Gathered:
        """The patient's record from prefetch and `fhir_server`. `whole=False` (the hooks): the rest of the record
        is read (from prefetch) or asked for (from the server) only when the Patient and Conditions put the
        patient inside, or possibly inside, some trial's cohort (`Catalog.entry_check`); /match reads the whole
        record."""
        check = None if whole else self.catalog.entry_check(patient_id)
        got = await self.gatherer.gather(patient_id, prefetch, fhir_server, token, check)
        if not got.patient_found:
            reasons = ["the patient's demographics (Patient) were neither prefetched nor readable from the FHIR server"]
            raise PreconditionFailed(reasons + got.gaps)
        return got

    def report(
        self, got: Gathered, patient_id: str, as_of: date, trial_ids: list[str] | None = None, whole: bool = True
    ) -> Report:
        """The report of the gathered record. `whole=False` (the hooks): a patient outside every cohort is
        reported from their Patient and Conditions alone (`Catalog.outside_facts`): the same statuses and no
        card, without normalising the rest of a record that no criterion is read against. /match keeps the
        whole record's report, which also lists the resources that could not be read."""
        return self.catalog.report(self._facts(got, patient_id, trial_ids, whole), as_of, trial_ids)

    def _facts(self, got: Gathered, patient_id: str, trial_ids: list[str] | None, whole: bool) -> PatientFacts:
        """The whole record's facts, or (`whole=False`) an outside patient's from their Patient and Conditions:
        as the gathering found them (then the rest was never read), or found here for a record gathered whole.
        The gathering's check covered every trial, so it holds for any chosen few."""
        if whole or got.entry_checked:  # checked: outside, or the whole record without asking its entry again
            return self.catalog.gathered_facts(got, patient_id)
        return self.catalog.cohort_first_facts(got.resources, patient_id, got.complete, trial_ids)

    async def mark_dismissed(self, report: Report, patient_id: str) -> None:
        """Trials whose card a clinician dismissed for this patient: still reported, marked with the date."""
        if self.dismissals is None:
            return
        _mark_dismissed(report, await self.dismissals.active(patient_id))

    async def feedback(self, service_id: str, items: list[FeedbackItem]) -> int:
        if self.dismissals is not None:
            return await self.dismissals.feedback(service_id, items)
        assert self.checklist is not None
        return await self.checklist.store.add(service_id, items)

    def _cards(
        self, got: Gathered, patient_id: str, as_of: date, base_url: str | None, dismissed: dict | None = None
    ) -> tuple[list, list]:
        """Cards, and the checklist rows (token hash, expiry, snapshot) their links point to."""
        report = self.report(got, patient_id, as_of, whole=False)
        _mark_dismissed(report, dismissed or {})
        gaps = got.gaps + report.skipped_resources
        links: dict[str, list[Link]] = {}
        rows: list[tuple[str, bytes]] = []
        if self.checklist is not None and self.checklist.available(base_url):
            for r in shown(report.trials):
                token, digest = checklists.new_token()
                trial = self.catalog.trials[r.id]
                rows.append((digest, checklists.snapshot(trial, r, report.patient, as_of, gaps)))
                links[r.id] = [self.checklist.link(base_url, token)]
        return cards_for(self.catalog.trials, report.trials, gaps, links, report.patient), rows

    async def patient_view(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        hook_instance: str,
        base_url: str | None = None,
    ) -> CardsResponse:
        got = await self.gather(patient_id, prefetch, fhir_server, token, whole=False)
        dismissed = await self.dismissals.active(patient_id) if self.dismissals else {}
        # CPU-bound: in a worker thread, so light requests (feedback, health) are not held behind it
        cards, rows = await asyncio.to_thread(self._cards, got, patient_id, self.today(), base_url, dismissed)
        if rows and self.checklist is not None:
            await self.checklist.store.put_checklists(checklists.rows_for(rows, self.checklist.ttl_seconds))
        if self.dismissals is not None:  # so that overridden feedback can name the patient and trial
            await self.dismissals.remember(patient_id, [(c.uuid, c.extension[EXTENSION_KEY]["trialId"]) for c in cards])
        log.info(
            "hook answered",
            extra={
                "hookInstance": hook_instance,
                "sources": got.sources,
                "resources": len(got.resources),
                "gaps": len(got.gaps),
                "cards": len(cards),
            },
        )
        return CardsResponse(cards=cards)

    async def order_check(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        draft: dict[str, Any],
        selections: list[str] | None,
        final: bool,
        hook_instance: str,
    ) -> CardsResponse:
        """order-sign (final) reads what prefetch lacks. order-select answers from prefetch, completing it from
        `fhirServer` within the budget when one is given (browser EHRs send only a search's first page), so
        both hooks see the record patient-view sees; without prefetch it stays silent rather than slow."""
        if final:
            got = await self.gather(patient_id, prefetch, fhir_server, token, whole=False)
        else:
            server = fhir_server if prefetch else None
            check = self.catalog.entry_check(patient_id)
            got = await self.gatherer.gather(patient_id, prefetch, server, token if server else None, check)
            if not got.patient_found:
                return CardsResponse(cards=[])
        today = self.today()

        def work() -> list:
            facts = self._facts(got, patient_id, None, whole=False)  # outside every cohort: no trial to close
            orders = draft_orders(self.catalog, draft, today, selections if not final else None)
            found = impacts(self.catalog, facts, orders, today)
            return order_cards(self.catalog.trials, found, facts.patient, signing=final)

        cards = await asyncio.to_thread(work)
        log.info(
            "order check answered",
            extra={
                "hookInstance": hook_instance,
                "sources": got.sources,
                "resources": len(got.resources),
                "cards": len(cards),
            },
        )
        return CardsResponse(cards=cards)
