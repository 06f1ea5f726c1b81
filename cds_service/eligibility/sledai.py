"""SLEDAI-2K clinical and serology points when only the total is recorded (clinical audit 2, NW6).

SLEDAI-2K (Gladman et al., J Rheumatol 2002;29:288-91) gives 2 points for "increased DNA binding" (anti-dsDNA
above the testing laboratory's normal range) and 2 for "low complement" (C3, C4 or CH50 below the
laboratory's lower limit of normal). With the breakdown absent:

    serology = 2 x [anti-dsDNA positive] + 2 x [C3 or C4 low]
    clinical = total - serology

read from the results of the 30 days up to the day of the score (the SLEDAI-2K 30-day window). A missing
serology input leaves the parts unknown: never assumed normal.
"""

from __future__ import annotations

from datetime import date, timedelta

from cds_service.eligibility.logic import Ctx
from cds_service.fhir.facts import LabResult

PARTS = ("sledai_2k_clinical", "sledai_2k_serology")
INPUTS = ("sledai_2k", "anti_dsdna", "c3", "c4")
SCORE_WINDOW = timedelta(days=30)


def _newest(ctx: Ctx, var: str, start: date, end: date, prelim: bool, usable) -> LabResult | None:  # noqa: ANN001
    for r in ctx.facts.labs.get(var, ()):
        if r.when is not None and start <= r.when <= end and (prelim or not r.preliminary) and usable(r):
            return r
    return None


def _low_complement(c3: LabResult | None, c4: LabResult | None) -> bool | None:
    low = [r.value < r.lln for r in (c3, c4) if r is not None and r.value is not None and r.lln is not None]
    if any(low):
        return True
    return False if len(low) == 2 else None


def sledai_part(ctx: Ctx, var: str, part: str, since: date, prelim: bool) -> tuple[LabResult | None, list[str]]:
    """The clinical or serology part of the newest SLEDAI-2K total since `since`, or what is missing."""
    total = _newest(ctx, "sledai_2k", since, ctx.as_of, prelim, lambda r: r.value is not None)
    if total is None or total.when is None or total.value is None:
        return None, ["SLEDAI-2K total"]
    start = total.when - SCORE_WINDOW
    ds = _newest(ctx, "anti_dsdna", start, total.when, prelim, lambda r: r.positive is not None)
    c3, c4 = (_newest(ctx, v, start, total.when, prelim, lambda r: r.value is not None) for v in ("c3", "c4"))
    low = _low_complement(c3, c4)
    missing = ["anti-dsDNA"] if ds is None else []
    if low is None:
        missing.append("C3 and C4 (with their lower limits of normal)")
    if ds is None or low is None:
        return None, [f"{m} within 30 days before the SLEDAI-2K of {total.when.isoformat()}" for m in missing]
    serology = 2 * bool(ds.positive) + 2 * low
    value = float(serology) if part == "sledai_2k_serology" else total.value - serology
    if value < 0:
        return None, [f"SLEDAI-2K total {total.value:g} is below its serology points ({serology})"]
    used = (total, ds, *(r for r in (c3, c4) if r is not None))
    return (
        LabResult(
            variable=var,
            when=total.when,
            resource=total.resource,
            value=value,
            unit="{score}",
            derived_from=tuple(r.resource for r in used),
        ),
        [],
    )
