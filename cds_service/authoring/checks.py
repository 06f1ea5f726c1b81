"""Lint checks that catch clinical mistakes, beyond names and shapes: implausible thresholds and unknown
coded answers (plausibility.py), import placeholders left in a file that is not a draft, source bullets
no criterion accounts for (bullets.py), and `left_out` quotes that are not in the source.

Each returns `Problem`s for lint.py, which runs them; kept apart so lint.py stays about reading files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cds_service.authoring import plausibility
from cds_service.authoring.bullets import coverage_gaps
from cds_service.authoring.ctgov import IMPORTED
from cds_service.authoring.problem import Problem
from cds_service.authoring.sources import normalize, source_path
from cds_service.fhir.mappings import Mappings


def rule_checks(
    path: Path, node: Any, rule: Any, key: str, tid: str | None, cid: str, mappings: Mappings
) -> list[Problem]:
    """Implausible thresholds and unknown answers of one parsed rule: errors in a `rule`, warnings in a
    `suggested_rule` (the registry text may hold the slip; it must be fixed before it is promoted)."""
    prefix = "" if key == "rule" else "suggested_rule: "
    severity = "error" if key == "rule" else "warning"
    return [
        Problem(str(path), line, tid, cid, prefix + msg, severity)
        for line, msg in plausibility.rule_problems(rule, node, mappings)
    ]


def placeholders(path: Path, root: Any, data: dict, tid: str | None) -> list[Problem]:
    """A draft lists what is still unencoded (a warning); a file that is not a draft must hold no import
    placeholder (an error per criterion): an unencoded criterion would be live, deciding nothing."""
    criteria = data.get("criteria") if isinstance(data.get("criteria"), list) else []
    pending = [(i, c) for i, c in enumerate(criteria) if isinstance(c, dict) and c.get("review") == IMPORTED]
    if data.get("draft") is True:
        ids = ", ".join(str(c.get("id")) for _, c in pending) or "none"
        message = (
            f"draft, not yet encoded: never evaluated until `draft: true` is removed; "
            f"{len(pending)} of {len(criteria)} criteria still hold the import placeholder: {ids}"
        )
        return [Problem(str(path), _line(plausibility.child(root, "draft")), tid, None, message, "warning")]
    return [
        Problem(
            str(path),
            _line(plausibility.child(plausibility.child(plausibility.child(root, "criteria"), i), "review")),
            tid,
            str(c.get("id", f"#{i + 1}")),
            f"still holds the import placeholder 'review: {IMPORTED}': encode it (promote its suggested_rule, "
            "write a rule, or give the reason a person decides), or mark the file `draft: true`",
        )
        for i, c in pending
    ]


def unranged_variables(path: Path, trial: Any, mappings: Mappings) -> list[Problem]:
    """Variables this trial reads with no plausible range: its thresholds on them go unchecked."""
    return [
        Problem(
            str(path),
            1,
            trial.id,
            None,
            f"variable '{v}' has no plausible range in mappings/observations.yaml: thresholds on it are not checked",
            "warning",
        )
        for v in plausibility.unranged(trial.variables, mappings)
    ]


def coverage(path: Path, root: Any, trial: Any) -> list[Problem]:
    """A source bullet that no criterion, entry or `left_out` entry quotes: forgotten or deleted."""
    gaps = coverage_gaps(path.parent, trial)
    if not gaps:
        return []
    where = source_path(path.parent, trial.id)
    name = f"sources/{where.name}" if where else "the source"
    line = _line(plausibility.child(root, "criteria"))
    in_record = " (line of eligibilityCriteria)" if where is not None and where.suffix == ".json" else ""
    return [
        Problem(
            str(path),
            line,
            trial.id,
            None,
            f"source bullet not quoted by any criterion: {name}:{b.line}{in_record}: {text[:100]!r}; quote it in a "
            "criterion, or list it under `left_out:` with the reason it is not encoded",
        )
        for b, text in gaps
    ]


def left_out_quotes(path: Path, root: Any, trial: Any, source: str) -> list[Problem]:
    """`left_out` quotes, like criteria, must be the source's words."""
    page = normalize(source)
    node = plausibility.child(root, "left_out")
    out = []
    for i, item in enumerate(trial.left_out):
        for fragment in item.text.split("..."):
            frag = normalize(fragment)
            if len(frag) >= 3 and frag not in page:
                line = _line(plausibility.child(plausibility.child(node, i), "text"))
                out.append(
                    Problem(
                        str(path),
                        line,
                        trial.id,
                        None,
                        f"left_out: quote not found in the source text: {fragment.strip()[:80]!r}",
                    )
                )
    return out


def _line(node: Any) -> int:
    return plausibility.line_of(node, 1)
