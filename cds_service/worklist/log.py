"""The screening log sponsors ask sites for, per month, from the stored screens and the card feedback.

For each month from `--from` to `--to`: the patients pre-screened for the trial (as of the month's last
stored screen), how many were likely or possibly eligible, how many could not be assessed, and the
pre-screen failures by their first failed criterion, quoted as the trial file quotes it; and the cards a
clinician dismissed that month, with the override reason. screened = failed + likely + possibly +
not assessed, by construction, and the page says so.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from cds_service.eligibility.trials import Trial
from cds_service.screening.csvsafe import safe_rows
from cds_service.screening.funnel import COHORT_STEP
from cds_service.worklist.runs import REMOVED, RunStore

LOG_FIELDS = ("month", "trial", "screened", "likely", "possibly", "not_assessed", "failed", "dismissed")
FAILURE_FIELDS = ("month", "trial", "criterion", "text", "patients")


@dataclass
class Month:
    month: str  # YYYY-MM
    run: int | None = None  # the month's last screen
    screened: int = 0
    likely: int = 0
    possibly: int = 0
    not_assessed: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # first failed criterion -> patients
    dismissed: dict[str, int] = field(default_factory=dict)  # override reason -> cards

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


def _months(start: date, end: date) -> list[str]:
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def build(store: RunStore, trial: Trial, start: date, end: date) -> list[Month]:
    runs = store.runs()
    months = {k: Month(k) for k in _months(start, end)}
    for m in months.values():
        in_month = [r for r in runs if r.as_of.isoformat()[:7] == m.month and start <= r.as_of <= end]
        if not in_month:
            continue
        m.run = in_month[-1].id
        for (_, t), row in store.state(in_month[-1], runs).items():
            if t != trial.id or row.status == REMOVED:  # no longer on the server: not screened
                continue
            m.screened += 1
            if row.status == "likely-eligible":
                m.likely += 1
            elif row.status == "possibly-eligible":
                m.possibly += 1
            elif row.status == "ineligible":
                first = row.failed.split(";")[0] or COHORT_STEP
                m.failed[first] = m.failed.get(first, 0) + 1
            else:
                m.not_assessed += 1
    for at, reason in store.dismissals(trial.id, start, end):
        if at[:7] in months:
            key = reason or "no reason given"
            months[at[:7]].dismissed[key] = months[at[:7]].dismissed.get(key, 0) + 1
    return list(months.values())


def quoted(trial: Trial, criterion: str) -> str | None:
    """The criterion's text as the trial file quotes it; the entry's for the cohort step; None for an id the
    trial no longer has."""
    if criterion == COHORT_STEP:
        return trial.entry.text
    found = next((c for c in trial.criteria if c.id == criterion), None)
    return found.text if found is not None else None


def quote(trial: Trial, criterion: str) -> str:
    return quoted(trial, criterion) or criterion


def write(months: list[Month], trial: Trial, start: date, end: date, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "screening-log.csv", out / "screening-failures.csv", out / "screening-log.html"]
    rows = [{"month": m.month, "trial": trial.id, "screened": m.screened, "likely": m.likely,
             "possibly": m.possibly, "not_assessed": m.not_assessed, "failed": m.failed_total,
             "dismissed": sum(m.dismissed.values())} for m in months]  # fmt: skip
    _csv(paths[0], LOG_FIELDS, rows)
    failures = [{"month": m.month, "trial": trial.id, "criterion": c, "text": quote(trial, c), "patients": n}
                for m in months for c, n in sorted(m.failed.items(), key=lambda kv: -kv[1])]  # fmt: skip
    _csv(paths[1], FAILURE_FIELDS, failures)
    paths[2].write_text(render(months, trial, start, end), encoding="utf-8")
    return paths


def _csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(safe_rows(rows))


def _chart(months: list[Month]) -> str:
    """Stacked bars per month: likely, possibly, not assessed, failed."""
    parts = (("likely", "#2e7d32"), ("possibly", "#7cb342"), ("not_assessed", "#9e9e9e"), ("failed", "#c62828"))
    top = max((m.screened for m in months), default=0) or 1
    bar_w, gap, h, base = 36, 16, 180, 200
    bars = []
    for i, m in enumerate(months):
        x, y = 40 + i * (bar_w + gap), base
        values = {"likely": m.likely, "possibly": m.possibly, "not_assessed": m.not_assessed, "failed": m.failed_total}
        for name, colour in parts:
            bh = values[name] / top * h
            y -= bh
            bars.append(f"<rect x='{x}' y='{y:.1f}' width='{bar_w}' height='{bh:.1f}' fill='{colour}'>"
                        f"<title>{m.month}: {values[name]} {name.replace('_', ' ')}</title></rect>")  # fmt: skip
        bars.append(f"<text x='{x}' y='{base + 14}'>{m.month}</text>")
        bars.append(f"<text x='{x}' y='{y - 4:.1f}'>{m.screened}</text>")
    legend = "".join(f"<tspan fill='{c}'>■ {n.replace('_', ' ')} </tspan>" for n, c in parts)
    width = 60 + len(months) * (bar_w + gap)
    return (f"<svg role='img' aria-label='Patients pre-screened per month, by outcome' width='{max(width, 360)}' "
            f"height='240' xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}"
            f"<text x='40' y='236'>{legend}</text></svg>")  # fmt: skip


def render(months: list[Month], trial: Trial, start: date, end: date) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{m.month}</td><td>{m.screened}</td><td>{m.likely}</td><td>{m.possibly}</td>"
        f"<td>{m.not_assessed}</td><td>{m.failed_total}</td><td>{sum(m.dismissed.values())}</td></tr>"
        for m in months
    )
    fails = "".join(
        f"<tr><td>{m.month}</td><td>{e(c)}</td><td class='q'>{e(quote(trial, c))}</td><td>{n}</td></tr>"
        for m in months for c, n in sorted(m.failed.items(), key=lambda kv: -kv[1])
    )  # fmt: skip
    dismissed = "".join(
        f"<tr><td>{m.month}</td><td>{e(reason)}</td><td>{n}</td></tr>"
        for m in months
        for reason, n in m.dismissed.items()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Screening log {e(trial.id)}</title><style>body{{font-family:sans-serif;margin:2rem;max-width:60rem}}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.2rem .5rem}"
        "td.q{max-width:30rem}svg text{font-size:11px}@media print{body{margin:0}}</style></head><body>"
        f"<h1>Screening log: {e(trial.id)}</h1><p>{e(trial.title)}</p>"
        f"<p>{start.isoformat()} to {end.isoformat()}. Counts are as of each month's last stored screen; "
        "screened = likely + possibly + not assessed + failed.</p>"
        f"{_chart(months)}<h2>Pre-screening per month</h2><table><thead><tr><th>month</th><th>screened</th>"
        "<th>likely</th><th>possibly</th><th>not assessed</th><th>failed</th><th>dismissed cards</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><h2>Pre-screen failures by first failed criterion</h2><table><thead><tr>"
        "<th>month</th><th>criterion</th><th>as the protocol says</th><th>patients</th></tr></thead>"
        f"<tbody>{fails}</tbody></table><h2>Cards dismissed by clinicians</h2><table><thead><tr><th>month</th>"
        f"<th>override reason</th><th>cards</th></tr></thead><tbody>{dismissed}</tbody></table></body></html>"
    )
