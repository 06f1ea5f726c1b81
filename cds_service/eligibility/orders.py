"""What a draft order would do to the patient's trial eligibility (order-select / order-sign).

Each draft order (MedicationRequest, ServiceRequest or Immunization-style vaccine
order) is mapped to its ingredient through mappings/ (RxNorm ingredient and
clinical-drug codes, CVX, names). The patient is then evaluated twice on the
order's start date: as recorded, and as if the order were given that day. A trial
the patient is likely or possibly eligible for today, where the order turns a
criterion into a fail, is an impact: temporary (with the date eligibility would
resume) or permanent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.report import CriterionResult, TrialResult
from cds_service.fhir.facts import MedicationFact, PatientFacts
from cds_service.fhir.medications import _daily_dose
from cds_service.fhir.read import Invalid, _d, _l, _o, _s

ORDER_TYPES = ("MedicationRequest", "ServiceRequest", "Immunization", "MedicationStatement")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR R4 `id`


@dataclass(frozen=True)
class DraftOrder:
    reference: str  # "MedicationRequest/abc"
    ingredient: str
    display: str
    start: date
    daily_dose_mg: float | None = None
    systemic: bool = True
    subject: str = ""  # "Patient/<id>" the draft is written for; impacts() keeps only the context patient's


@dataclass
class Impact:
    order: DraftOrder
    trial: str
    status_before: str
    status_after: str
    criteria: list[CriterionResult] = field(default_factory=list)  # newly failing, with until

    @property
    def permanent(self) -> bool:
        """A bar with no end date. A long washout (2 years after an mRNA product) is not permanent: the
        card names the date, though the trial counts the patient ineligible beyond the horizon."""
        return any(c.until is None for c in self.criteria)

    @property
    def resumes(self) -> date | None:
        dates = [c.until for c in self.criteria if c.until]
        return max(dates) if dates and not self.permanent else None


def _concept(res: dict) -> Any:
    rtype = res.get("resourceType")
    if rtype == "Immunization":
        return res.get("vaccineCode")
    if rtype == "ServiceRequest":
        return res.get("code")
    return res.get("medicationCodeableConcept")


def _start(res: dict, default: date) -> date:
    for d in _l(res.get("dosageInstruction")) + _l(res.get("dosage")):
        bounds = _o(_o(_o(_o(d).get("timing")).get("repeat")).get("boundsPeriod"))
        start = _d(bounds.get("start"))
        if start:
            return max(start, default)
    occ = _d(res.get("occurrenceDateTime")) or _d(_o(res.get("occurrencePeriod")).get("start"))
    return max(occ, default) if occ else default


def _checked_ids(res: dict) -> tuple[str, str] | None:
    """(`Type/id` of the draft, `Patient/id` it is for), or None when either is not a plain FHIR id.

    The reference goes back to the EHR as a card's delete `resourceId`, so `MedicationRequest/../../
    Patient/x` must never be echoed; a draft without a relative subject could be anyone's order."""
    rid = res.get("id")
    subject = res.get("patient" if res.get("resourceType") == "Immunization" else "subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(rid, str) or not FHIR_ID.match(rid) or not isinstance(ref, str):
        return None
    kind, _, pid = ref.partition("/")
    if kind != "Patient" or not FHIR_ID.match(pid):
        return None
    return f"{res['resourceType']}/{rid}", ref


def draft_orders(catalog: Catalog, bundle: Any, today: date, selections: list[str] | None = None) -> list[DraftOrder]:
    """The orders in `context.draftOrders` (only the `selections`, when given) that map to an ingredient."""
    out = []
    norm = catalog.normalizer
    entries = _l(_o(bundle).get("entry")) if isinstance(bundle, dict) else []
    for e in entries:
        res = _o(_o(e).get("resource"))
        rtype = res.get("resourceType")
        if rtype not in ORDER_TYPES:
            continue
        checked = _checked_ids(res)
        if checked is None:
            continue
        ref, subject = checked
        if selections and ref not in selections and str(res.get("id")) not in selections:
            continue
        try:
            concept = _concept(res)
            key, strength = norm._ingredient(concept) if concept is not None else (None, None)
            if key is None:
                continue
            daily, systemic = _daily_dose(_l(res.get("dosageInstruction")), strength, catalog.mappings)
            display = _s(_o(concept).get("text")) or next(
                (c.get("display") for c in _l(_o(concept).get("coding")) if isinstance(c, dict) and c.get("display")),
                key.replace("_", " "),
            )
            out.append(DraftOrder(ref, key, display, _start(res, today), daily, systemic, subject))
        except Invalid:
            continue
    return out


def with_order(facts: PatientFacts, order: DraftOrder, catalog: Catalog) -> PatientFacts:
    """The patient's facts as if `order` were given once on its start date."""
    ing = catalog.mappings.medications.ingredients[order.ingredient]
    pred = order.daily_dose_mg * ing.pred_eq if order.daily_dose_mg is not None and ing.pred_eq else None
    given = MedicationFact(
        ingredient=order.ingredient,
        classes=frozenset(catalog.mappings.ingredient_classes.get(order.ingredient, ())),
        resource=order.reference,
        display=order.display,
        status="completed",
        start=order.start,
        end=order.start,
        daily_dose_mg=order.daily_dose_mg,
        pred_eq_mg=pred,
    )
    return replace(facts, medications=[*facts.medications, given])


def _later(before: TrialResult, after: TrialResult) -> bool:
    """Does the order move the day the patient could enter later than it already is? A two-month
    washout changes nothing for a 17-year-old whose 18th birthday is 11 months away."""
    if after.status == "ineligible":
        return before.status != "ineligible"
    return (after.eligible_from or date.min) > (before.eligible_from or date.min)


def impacts(catalog: Catalog, facts: PatientFacts, orders: list[DraftOrder], today: date) -> list[Impact]:
    """Per order and trial the patient may enter today: the criteria the order would turn into fails.

    Only drafts written for this patient count: a draft for another patient warns no one."""
    orders = [o for o in orders if o.subject == facts.patient]
    baseline = {today: catalog.report(facts, today).trials}
    open_today = sorted(t.id for t in baseline[today] if t.status in ("likely-eligible", "possibly-eligible"))
    if not open_today:
        return []
    out: list[Impact] = []
    for order in orders:
        ing = catalog.mappings.medications.ingredients[order.ingredient]
        if ing.systemic_only and not order.systemic:
            continue  # inhaled or topical steroids: the trials allow them
        current = [m for m in facts.medications if m.ingredient == order.ingredient and m.ongoing(today)]
        if current and (
            order.daily_dose_mg is None
            or any(m.daily_dose_mg is not None and order.daily_dose_mg <= m.daily_dose_mg for m in current)
        ):
            continue  # renewing what the patient already takes, at no higher dose, changes nothing
        on = order.start
        if on not in baseline:  # the unchanged record, once per start date
            baseline[on] = catalog.report(facts, on, open_today).trials
        before = {t.id: t for t in baseline[on]}
        after = catalog.report(with_order(facts, order, catalog), on, open_today).trials
        for t_after in after:
            t_before: TrialResult = before[t_after.id]
            was = {c.id: c.outcome for c in t_before.criteria}
            newly = [c for c in t_after.criteria if c.outcome == "fail" and was.get(c.id) != "fail"]
            if newly and _later(t_before, t_after):
                out.append(Impact(order, t_after.id, t_before.status, t_after.status, newly))
    return out
