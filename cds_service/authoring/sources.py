"""The registry text a trial's criteria quote, kept beside the trial file in `trials/sources/`.

Either a registry page as text (`NCTxxxxxxxx.txt`) or a ClinicalTrials.gov API v2 study record
(`NCTxxxxxxxx.json`). Quotes are compared whitespace-insensitively, with the escapes registry pages
use (`\\>`, `\\[`) undone, so "verbatim" means the words, not the line breaks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_ESCAPES = str.maketrans({"•": " "})


def normalize(text: str) -> str:
    text = text.translate(_ESCAPES)
    for esc in ("\\>", "\\<", "\\[", "\\]", "\\^", "\\*", "\\_"):
        text = text.replace(esc, esc[1])
    return re.sub(r"\s+", "", text).lower()


def record_text(record: dict[str, Any]) -> str:
    """The quotable text of a v2 study record: titles, conditions and the eligibility criteria."""
    p = record.get("protocolSection") or {}
    ident = p.get("identificationModule") or {}
    elig = p.get("eligibilityModule") or {}
    structured = [
        f"{label}: {elig[key]}"
        for key, label in (("sex", "Sex"), ("minimumAge", "Minimum age"), ("maximumAge", "Maximum age"))
        if elig.get(key)
    ]
    conditions = (p.get("conditionsModule") or {}).get("conditions") or []
    parts = [
        ident.get("briefTitle", ""),
        ident.get("officialTitle", ""),
        "Conditions: " + ", ".join(str(c) for c in conditions) if conditions else "",
        *structured,
        elig.get("eligibilityCriteria", ""),
    ]
    return "\n".join(str(x) for x in parts if x)


def source_path(trials_dir: Path, trial_id: str) -> Path | None:
    for ext in (".txt", ".json"):
        path = trials_dir / "sources" / f"{trial_id}{ext}"
        if path.is_file():
            return path
    return None


def source_text(trials_dir: Path, trial_id: str) -> str | None:
    path = source_path(trials_dir, trial_id)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    return record_text(json.loads(text)) if path.suffix == ".json" else text


def unquoted(trial: Any, source: str) -> list[tuple[str, str]]:
    """(criterion id or "entry", fragment) for every quoted fragment (split at '...') not in the source."""
    page = normalize(source)
    out = []
    quotes = [("entry", trial.entry.text), *((c.id, c.text) for c in trial.criteria)]
    for cid, text in quotes:
        for fragment in text.split("..."):
            frag = normalize(fragment)
            if len(frag) >= 3 and frag not in page:
                out.append((cid, fragment.strip()))
    return out
