"""The pipeline behind every endpoint: gather -> normalize -> evaluate -> cards/report."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from .cards import cards_for
from .catalog import Catalog
from .gather import Gathered, Gatherer
from .hooks import CardsResponse
from .report import Report

log = logging.getLogger("trial_matcher")


class PreconditionFailed(Exception):
    """CDS Hooks 412: the data needed could be neither prefetched nor fetched."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass
class Matcher:
    catalog: Catalog
    gatherer: Gatherer
    fixed_as_of: date | None = None

    def today(self) -> date:
        return self.fixed_as_of or date.today()

    async def gather(
        self, patient_id: str, prefetch: dict[str, Any] | None, fhir_server: str | None, token: str | None
    ) -> Gathered:
        got = await self.gatherer.gather(patient_id, prefetch, fhir_server, token)
        if not got.patient_found:
            reasons = ["the patient's demographics (Patient) were neither prefetched nor readable from the FHIR server"]
            raise PreconditionFailed(reasons + got.gaps)
        return got

    def report(self, got: Gathered, patient_id: str, as_of: date, trial_ids: list[str] | None = None) -> Report:
        facts = self.catalog.facts(got.resources, patient_id, got.complete)
        return self.catalog.report(facts, as_of, trial_ids)

    def _cards(self, got: Gathered, patient_id: str, as_of: date) -> list:
        report = self.report(got, patient_id, as_of)
        return cards_for(self.catalog.trials, report.trials, got.gaps + report.skipped_resources)

    async def patient_view(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        hook_instance: str,
    ) -> CardsResponse:
        got = await self.gather(patient_id, prefetch, fhir_server, token)
        # CPU-bound: in a worker thread, so light requests (feedback, health) are not held behind it
        cards = await asyncio.to_thread(self._cards, got, patient_id, self.today())
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
