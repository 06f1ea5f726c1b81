"""Screening results on disk: patients.csv and patients.parquet (one row per patient and trial),
funnel.csv (cohort attrition per trial and criterion, as OHDSI ATLAS shows it) and funnel.html (one
page, an attrition chart per trial as inline SVG and the table: readable offline, no script)."""

from __future__ import annotations

import contextlib
import csv
import html
import importlib
import io
import re
import threading
from collections.abc import Callable, Iterable
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from cds_service.eligibility.catalog import Catalog
from cds_service.scratch import scratch_folder
from cds_service.screening.bulk import ReadStats
from cds_service.screening.csvsafe import may_hold_formula, safe_cell, safe_cells
from cds_service.screening.funnel import COHORT_STEP, ROW_FIELDS, Funnel
from cds_service.screening.rows import Overlap, Rows, Run
from cds_service.screening.run import Screening

FUNNEL_FIELDS = ("trial", "step", "criterion", "type", "remaining_before", "failed_here", "unknown_here", "remaining")
# Declared, not guessed: DuckDB guesses from a sample, so ids that are numbers for 20,000 rows and then
# not would fail the conversion after the whole run.
ROW_TYPES = {
    "patient": "VARCHAR", "trial": "VARCHAR", "status": "VARCHAR", "eligible_from": "DATE", "pass": "INTEGER",
    "fail": "INTEGER", "unknown": "INTEGER", "review": "INTEGER", "failed": "VARCHAR", "unknowns": "VARCHAR",
}  # fmt: skip


def funnel_rows(funnel: Funnel, catalog: Catalog) -> list[dict[str, Any]]:
    out = []
    for trial_id in sorted(funnel.order):
        remaining = funnel.screened.get(trial_id, 0)
        trial = catalog.trials.get(trial_id)
        types = {COHORT_STEP: "entry", **{c.id: c.type for c in trial.criteria}} if trial else {}
        steps = [COHORT_STEP, *(c.id for c in trial.criteria)] if trial else funnel.order[trial_id]
        for step, cid in enumerate(steps, start=1):
            failed = funnel.failed.get(trial_id, {}).get(cid, 0)
            out.append(
                {
                    "trial": trial_id,
                    "step": step,
                    "criterion": cid,
                    "type": types.get(cid, ""),
                    "remaining_before": remaining,
                    "failed_here": failed,
                    "unknown_here": funnel.unknown.get(trial_id, {}).get(cid, 0),
                    "remaining": remaining - failed,
                }
            )
            remaining -= failed
    return out


def warm_up() -> threading.Thread:
    """Import the Parquet writer (DuckDB: about 0.1 s) in a thread while the workers screen, so the results
    are written as soon as the last partition is in: the parent waits on its workers then, and the import
    is a tenth of a clinic export's screen. Call it only once the workers are forked: a process is forked
    only while it runs no other thread (`workers.start`). `write_all` needs nothing of it: a second import
    of the module waits for this one, or does the import itself if the thread could not."""
    thread = threading.Thread(target=_import_quietly, args=("duckdb",), name="screen-warm-up", daemon=True)
    thread.start()
    return thread


def _import_quietly(module: str) -> None:
    with contextlib.suppress(Exception):  # `_parquet` imports it again, and reports what goes wrong there
        importlib.import_module(module)


def write_all(result: Screening, catalog: Catalog, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("patients.csv", "patients.parquet", "funnel.csv", "funnel.html")}
    raw = out / ".patients.raw.csv"  # the ids as they are, for Parquet (no spreadsheet opens it)
    try:
        _patients_csv(result.rows, raw, paths["patients.csv"])
        _parquet(raw, paths["patients.parquet"])
    finally:
        raw.unlink(missing_ok=True)
    frows = funnel_rows(result.funnel, catalog)
    _csv(paths["funnel.csv"], FUNNEL_FIELDS, frows)
    paths["funnel.html"].write_text(render_html(frows, catalog, result), encoding="utf-8")
    return paths


def _csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """A CSV a coordinator opens in a spreadsheet: cells that would run as formulas are neutralised."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows([safe_cell(r.get(k, "")) for k in fields] for r in rows)


def _patients_csv(rows: Iterable[dict[str, Any]], raw: Path, safe: Path) -> None:
    """The rows, read once (from disk, for a large screen), as two CSVs: `raw` with the ids as they are (for
    Parquet), `safe` for spreadsheets. Rows as lists, not DictWriter: a screen writes millions of them. A
    batch is written as text once; `safe` gets the same text unless a cell in it may start as a formula
    (then that batch's cells are neutralised one by one): ids that do are rare, checking every cell is not.
    The rows of patients outside every cohort (most of a clinic's) are written as text from their trials'
    rows (`_run_text`), never built one by one."""
    if isinstance(rows, Rows):
        try:
            return _write_patients(rows.segments(), raw, safe)
        except Overlap:
            pass  # never by construction; row by row below is right whatever the rows
    _write_patients(rows, raw, safe)


_BATCH = 10_000  # rows written as one text


def _write_patients(items: Iterable[dict[str, Any] | Run], raw: Path, safe: Path) -> None:
    with raw.open("w", newline="", encoding="utf-8") as f, safe.open("w", newline="", encoding="utf-8") as g:
        csv.writer(f).writerow(ROW_FIELDS)
        csv.writer(g).writerow(ROW_FIELDS)
        pending: list[tuple] = []
        for item in items:
            if isinstance(item, Run):
                _write_cells(pending, f, g)
                pending = []
                _write_run(item.template, item.patients, f, g)
            else:
                pending.append(_CELLS_OF(item))  # every row has them all (funnel.row)
                if len(pending) >= _BATCH:
                    _write_cells(pending, f, g)
                    pending = []
        _write_cells(pending, f, g)


_CELLS_OF = itemgetter(*ROW_FIELDS)


def _write_cells(cells: list[tuple], f: IO[str], g: IO[str]) -> None:
    _write_both(_csv_text(cells), lambda: _csv_text([safe_cells(c) for c in cells]), f, g)


def _write_run(template: list[dict[str, Any]], patients: list[str], f: IO[str], g: IO[str]) -> None:
    _write_both(_run_text(template, patients), lambda: _run_text(template, patients, neutral=True), f, g)


def _write_both(text: str, neutral: Callable[[], str], f: IO[str], g: IO[str]) -> None:
    """`text` (whole CSV rows) to the raw file, and to the spreadsheet-safe one unless a cell of it may start
    as a formula: then the same rows with every cell neutralised (`neutral()`)."""
    f.write(text)
    g.write(neutral() if may_hold_formula(text) else text)


def _csv_text(rows: Iterable[Iterable[Any]]) -> str:
    batch = io.StringIO(newline="")
    csv.writer(batch).writerows(rows)
    return batch.getvalue()


_QUOTED = re.compile('[,"\r\n]')  # a cell holding one is quoted by csv.writer (minimal quoting); any other is not


def _run_text(template: list[dict[str, Any]], patients: list[str], neutral: bool = False) -> str:
    """The CSV text csv.writer writes for the template's rows with each of `patients` (neutralised: that of
    every cell `safe_cell`ed). A row is its patient's cell and its trial's row after the patient cell, which
    is the same for every patient (a cell is quoted on its own)."""
    prepare = safe_cells if neutral else list
    tails = [_csv_text([prepare(("", *_CELLS_OF(t)[1:]))]) for t in template]  # "," and the rest of the row
    ids = [safe_cell(p) for p in patients] if neutral else patients
    if _QUOTED.search("".join(ids)):
        ids = [_csv_text([(i, "")])[:-3] for i in ids]  # with a second cell: an empty id alone is quoted
    return "".join([i + tail for i in ids for tail in tails])


# DuckDB's own bound for the conversion. Its default is 80 % of the machine's memory, and it used it: 2.1 GiB
# for a 3.9 GB CSV of wide rows (1.5 million, 2.4 kB of unknowns each), 0.5 GiB for 10 million ordinary
# rows. With this bound and smaller row groups: 0.49 and 0.41 GiB, and no slower (8.9 against 9.2 s, 5.4
# against 5.7 s; 2026-12-05). Past it, DuckDB spills to disk.
PARQUET_MEMORY = "512MB"
PARQUET_ROW_GROUP = 30_000  # rows (DuckDB's default 122,880): what each thread buffers before writing


def _parquet(csv_path: Path, parquet_path: Path) -> None:
    """DuckDB converts the CSV (typed columns, compressed) without holding it in Python; the column types
    are declared, so no value late in the file can contradict a guess made from its start. Its memory is
    bounded (PARQUET_MEMORY), and what it spills goes to a scratch folder of ours: its default, `./.tmp`,
    would put patient ids in whatever folder the command was run from. A conversion the bound cannot hold
    (one block larger than it) runs again without the bound, as before it."""
    import duckdb

    with scratch_folder("screen-parquet-") as spill:
        try:
            _copy(csv_path, parquet_path, {"memory_limit": PARQUET_MEMORY, "temp_directory": str(spill)})
        except duckdb.OutOfMemoryException:
            _copy(csv_path, parquet_path, {"temp_directory": str(spill)})


def _copy(csv_path: Path, parquet_path: Path, config: dict[str, str]) -> None:
    import duckdb

    con = duckdb.connect(config=config)
    try:
        con.execute(
            "COPY (SELECT * FROM read_csv(?, header=true, auto_detect=false, columns=?, quote='\"', escape='\"', "
            f"delim=',', nullstr='')) TO ? (FORMAT PARQUET, ROW_GROUP_SIZE {PARQUET_ROW_GROUP})",
            [str(csv_path), ROW_TYPES, str(parquet_path)],
        )
    finally:
        con.close()


def set_aside(stats: ReadStats, trials: int) -> str:
    """What was screened and everything set aside, in one sentence (the funnel page; the CLI says the same)."""
    return (
        f"{len(stats.patients - stats.too_large)} patients screened against {trials} trials; "
        f"{stats.malformed} malformed lines, {stats.too_long} lines over the line limit, {stats.no_patient} "
        f"resources naming no patient, {stats.two_patients} naming two different patients and "
        f"{stats.other_types} of types no criterion reads were set aside; {len(stats.too_large)} patients over "
        "the per-patient limit were not screened; "
        f"{stats.outside_cohort} lines of patients outside every trial's cohort were not read (not needed)."
    )


def render_html(frows: list[dict[str, Any]], catalog: Catalog, result: Screening) -> str:
    trials = sorted({r["trial"] for r in frows})
    sections = [_trial_section(t, [r for r in frows if r["trial"] == t], catalog) for t in trials]
    head = f"<p>{html.escape(set_aside(result.stats, len(trials)))}</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Feasibility funnel</title>"
        "<style>body{font-family:sans-serif;margin:2rem;max-width:70rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}td:first-child,th:first-child"
        "{text-align:left}svg text{font-size:11px}</style></head><body><h1>Feasibility funnel</h1>"
        + head
        + "".join(sections)
        + "</body></html>"
    )


def _trial_section(trial_id: str, rows: list[dict[str, Any]], catalog: Catalog) -> str:
    title = catalog.trials[trial_id].label if trial_id in catalog.trials else trial_id
    start = rows[0]["remaining_before"] if rows else 0
    width, bar_h, label_w = 700, 16, 110
    scale = (width - label_w - 60) / max(start, 1)
    bars = []
    steps = [{"criterion": "screened", "remaining": start}, *rows]
    for i, r in enumerate(steps):
        y = i * (bar_h + 4)
        w = r["remaining"] * scale
        bars.append(
            f"<text x='0' y='{y + 12}'>{html.escape(r['criterion'])}</text>"
            f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='#4a7ebb'>"
            f"<title>{r['remaining']} remaining after {html.escape(r['criterion'])}</title></rect>"
            f"<text x='{label_w + w + 4:.1f}' y='{y + 12}'>{r['remaining']}</text>"
        )
    svg = (
        f"<svg role='img' aria-label='Attrition for {html.escape(trial_id)}' width='{width}' "
        f"height='{len(steps) * (bar_h + 4) + 4}' xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}</svg>"
    )
    cells = "".join(
        f"<tr><td>{html.escape(r['criterion'])} ({r['type']})</td><td>{r['remaining_before']}</td>"
        f"<td>{r['failed_here']}</td><td>{r['unknown_here']}</td><td>{r['remaining']}</td></tr>"
        for r in rows
    )
    table = (
        "<table><thead><tr><th>criterion</th><th>remaining before</th><th>failed here</th><th>unknown here</th>"
        f"<th>remaining</th></tr></thead><tbody>{cells}</tbody></table>"
    )
    return f"<section><h2>{html.escape(trial_id)}: {html.escape(title)}</h2>{svg}{table}</section>"
