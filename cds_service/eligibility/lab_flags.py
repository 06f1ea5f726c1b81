"""The laboratory's own flag against its reference range (v3 ObservationInterpretation H, HH, L, LL, N) as
evidence for x ULN / x LLN criteria when the result carries no numeric range (clinical audit 2, NS12: "above
the normal reference range of the testing center")."""

from __future__ import annotations

# where a lab flag puts the value, as a multiple of the limit: (low, low open, high, high open)
FLAG_SPAN = {
    ("upper", "H"): (1.0, True, float("inf"), True),
    ("upper", "HH"): (1.0, True, float("inf"), True),
    ("upper", "N"): (0.0, False, 1.0, False),
    ("upper", "L"): (0.0, False, 1.0, False),
    ("upper", "LL"): (0.0, False, 1.0, False),
    ("lower", "L"): (0.0, False, 1.0, True),
    ("lower", "LL"): (0.0, False, 1.0, True),
    ("lower", "N"): (1.0, False, float("inf"), True),
    ("lower", "H"): (1.0, False, float("inf"), True),
    ("lower", "HH"): (1.0, False, float("inf"), True),
}


def flag_decides(op: str, m: float, side: str, flag: str | None) -> bool | None:
    """What the lab's flag (H above its range, N within, L below) says of `value op m x limit`: TRUE when
    every value the flag allows meets it, FALSE when none does, else None."""
    span = FLAG_SPAN.get((side, flag or ""))
    if span is None:
        return None
    lo, lo_open, hi, hi_open = span
    every, none = {
        ">": (lo > m or (lo == m and lo_open), hi <= m),
        ">=": (lo >= m, hi < m or (hi == m and hi_open)),
        "<": (hi < m or (hi == m and hi_open), lo >= m),
        "<=": (hi <= m, lo > m or (lo == m and lo_open)),
    }.get(op, (False, False))
    return True if every else (False if none else None)
