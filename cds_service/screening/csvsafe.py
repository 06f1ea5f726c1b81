"""Neutralising CSV cells a spreadsheet would run as a formula (CSV/formula injection, OWASP).

Patient ids and criterion ids come from the export and the trial files: an id such as
`=HYPERLINK("http://x",...)` or `+cmd|' /C calc'!A0` would be a live formula when a coordinator opens
patients.csv in Excel or LibreOffice. Every CSV the project writes passes its cells through `safe_cell`
(the screening outputs today, a screening log later), so the rule lives in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # incl. full-width


# A cell starting with one of FORMULA_STARTS, in CSV text as `csv.writer` writes it (minimal quoting): after
# a delimiter or a line's start, bare or opening a quoted cell (one holding a line break is always quoted, so
# a bare carriage return is a line's end). Errs one way only: a match inside a quoted cell is a false alarm.
_BARE = "".join(re.escape(c) for c in FORMULA_STARTS if c not in "\r\n")
_FORMULA_IN_CSV = re.compile(f'[,\\n](?:[{_BARE}]|"[{"".join(map(re.escape, FORMULA_STARTS))}])')


def may_hold_formula(csv_text: str) -> bool:
    """False only when no cell of `csv_text` (whole rows written by `csv.writer`) starts as a formula would:
    then the text is safe as it is, and a batch of rows need not be neutralised cell by cell."""
    return _FORMULA_IN_CSV.search("\n" + csv_text) is not None


def safe_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would read as a formula gets a leading `'`; anything else is unchanged.
    Numbers stay numbers (a negative count is data, not a formula, and is not text in the file)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_cells(cells: Iterable[Any]) -> list[Any]:
    """`safe_cell` of each cell of a row, inline: a screen's CSV has tens of millions of cells."""
    return ["'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v for v in cells]


def safe_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row (a dict of cells) with every text cell neutralised."""
    return {k: safe_cell(v) for k, v in row.items()}


def safe_rows(rows: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    """Rows neutralised lazily, so a large CSV is never held twice."""
    return (safe_row(r) for r in rows)
