"""The bullets of a trial's eligibility text, and whether the trial file accounts for each one.

A criterion that was never written (or was deleted) leaves no trace in the rules: the patients it
would exclude stay eligible, and nothing says so. So every bullet of the source must be quoted by at
least one criterion (or the entry), or listed under the trial's `left_out` with the reason it is not
encoded. Lint names a bullet that is neither, with its line in the source; `diff` compares the
bullets of the kept source with a newer record's (added, changed, removed).

Registry pages differ (ClinConnect, MedPath, Veeva, CenterWatch copies), so bullets are read
plainly: inside the eligibility block (from the first "Inclusion criteria" heading, else the first
"Eligibility" heading, to the first page heading after the last bullet) each line with a bullet
marker, or long enough to be a sentence, is a bullet. A v2 record's `eligibilityCriteria` is read
the way `import` reads it (nested bullets apart, wrapped lines joined).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.authoring.sources import normalize, source_path, source_text

MIN_UNCOVERED = 30  # characters (spaces removed) of a bullet no quote covers before it counts as missed
MIN_QUOTE = 10  # a quoted fragment shorter than this ("1.", "and") covers nothing
_MARKER = re.compile(r"^\s*(?:[•*\-·]|\d{1,2}[.)]|[a-z][.)]|\(\d{1,2}\)|[ivx]{1,4}[.)]|[①-⑳])\s*")
_SECTION = re.compile(r"^\W*(?:key\s+)?(inclusion|exclusion)(?:\s+criteria)?\W*$", re.IGNORECASE)
_ELIGIBILITY = re.compile(r"^\W*eligibility(?:\s+criteria)?\W*$", re.IGNORECASE)
SIMILAR = 0.5  # difflib ratio above which an edited bullet is "changed" rather than removed and added
SENTENCE = 40  # an unmarked line this long inside the block is a bullet (Veeva's "Liver function: ...")


@dataclass(frozen=True)
class Bullet:
    line: int  # 1-based line in the source file (in `eligibilityCriteria` for a v2 record)
    text: str

    @property
    def key(self) -> str:
        return normalize(_MARKER.sub("", self.text, count=1))


def bullets_of(path: Path) -> list[Bullet]:
    """The eligibility bullets of a kept source (`.txt` page or `.json` v2 record)."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        record = json.loads(raw)
        elig = ((record.get("protocolSection") or {}).get("eligibilityModule") or {}).get("eligibilityCriteria")
        return record_bullets(str(elig or ""))
    return page_bullets(raw)


def record_bullets(text: str) -> list[Bullet]:
    """Bullets of a v2 record's eligibility text: marked lines, with unmarked lines joined to the bullet
    they continue."""
    out: list[tuple[int, list[str]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or _SECTION.match(line):
            continue
        if _MARKER.match(line) or not out:
            out.append((n, [line.strip()]))
        else:
            out[-1][1].append(line.strip())
    return [Bullet(n, " ".join(parts)) for n, parts in out]


def page_bullets(text: str) -> list[Bullet]:
    """Bullets of a registry page kept as text (see the module docstring for the reading)."""
    lines = text.splitlines()
    start = _block_start(lines)
    if start is None:
        return []
    out: list[Bullet] = []
    for n in range(start, len(lines)):
        line = lines[n].strip()
        body = _MARKER.sub("", line, count=1).strip() if line else ""
        if not body or _SECTION.match(body):
            continue
        if _MARKER.match(line) or len(body) >= SENTENCE or body.endswith((".", ";", "。")):
            out.append(Bullet(n + 1, body))
        elif out:  # a page heading after the list ("Study Design", "Locations"): the block ends
            break
    return out


def _block_start(lines: list[str]) -> int | None:
    for pattern in (_SECTION, _ELIGIBILITY):
        for n, line in enumerate(lines):
            body = _MARKER.sub("", line.strip(), count=1)
            if pattern.match(body) and (pattern is _ELIGIBILITY or "inclusion" in body.lower()):
                return n + 1
    return None


def uncovered(bullets: list[Bullet], source_text: str, quotes: list[str]) -> list[tuple[Bullet, str]]:
    """(bullet, the part no quote covers) for each bullet with a long stretch no quote covers. Quotes are
    located in the whole normalized source, so one quote may span bullets and a bullet may be split
    between criteria (two numbered items a page prints on one line)."""
    page = normalize(source_text)
    covered = bytearray(len(page))
    for quote in quotes:
        for fragment in quote.split("..."):
            frag = normalize(fragment)
            if len(frag) < MIN_QUOTE:
                continue
            at = page.find(frag)
            while at != -1:
                covered[at : at + len(frag)] = b"\x01" * len(frag)
                at = page.find(frag, at + 1)
    out = []
    cursor = 0
    for b in bullets:
        key = b.key
        at = page.find(key, cursor) if key else -1
        if at == -1:
            at = page.find(key)
        if at == -1:
            continue  # not locatable in the normalized page (never expected): nothing to say
        cursor = at + len(key)
        length, offset = _longest_gap(covered, at, at + len(key))
        if length >= MIN_UNCOVERED:
            out.append((b, _excerpt(_MARKER.sub("", b.text, count=1), offset - at)))
    return out


def _longest_gap(covered: bytearray, start: int, end: int) -> tuple[int, int]:
    """(length, start) of the longest uncovered stretch in [start, end)."""
    best, best_at, run = 0, start, 0
    for i in range(start, end):
        run = 0 if covered[i] else run + 1
        if run > best:
            best, best_at = run, i - run + 1
    return best, best_at


def _excerpt(text: str, offset: int) -> str:
    """The bullet's words from the `offset`-th non-space character on (where the uncovered part starts)."""
    seen = 0
    for i, ch in enumerate(text):
        if seen >= offset:
            return ("..." if i else "") + text[i:]
        seen += normalize(ch) != ""
    return text


def trial_quotes(trial: Any) -> list[str]:
    """Every quote of a trial that accounts for source text: criteria, entry, and `left_out` entries."""
    return [trial.entry.text, *(c.text for c in trial.criteria), *(x.text for x in trial.left_out)]


def coverage_gaps(trials_dir: Path, trial: Any) -> list[tuple[Bullet, str]] | None:
    """Uncovered bullets of the trial's kept source; None when there is no source."""
    path = source_path(trials_dir, trial.id)
    if path is None:
        return None
    return uncovered(bullets_of(path), source_text(trials_dir, trial.id) or "", trial_quotes(trial))


@dataclass(frozen=True)
class BulletChange:
    kind: str  # added | changed | removed
    old: Bullet | None
    new: Bullet | None

    def __str__(self) -> str:
        if self.kind == "added":
            assert self.new is not None
            return f"bullet added (newer line {self.new.line}): {self.new.text[:120]!r}"
        if self.kind == "removed":
            assert self.old is not None
            return f"bullet removed (kept source line {self.old.line}): {self.old.text[:120]!r}"
        assert self.old is not None and self.new is not None
        return (
            f"bullet changed (kept source line {self.old.line}, newer line {self.new.line}): "
            f"{self.old.text[:100]!r} -> {self.new.text[:100]!r}"
        )


def bullet_changes(old: list[Bullet], new: list[Bullet]) -> list[BulletChange]:
    """Bullets added, changed or removed from `old` to `new`, compared by their words (spacing, markers and
    escapes aside). A replaced run pairs bullets in order; the longer side's rest is added or removed."""
    matcher = difflib.SequenceMatcher(a=[b.key for b in old], b=[b.key for b in new], autojunk=False)
    out: list[BulletChange] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            out += _pair(old[i1:i2], new[j1:j2])
    return out


def _pair(old: list[Bullet], new: list[Bullet]) -> list[BulletChange]:
    """Within a replaced run, a bullet whose words are mostly the same is "changed"; the rest are removed
    or added (a bullet deleted beside an edited one is not read as two edits)."""
    out: list[BulletChange] = []
    start = 0
    for b in old:
        best, best_at = 0.0, -1
        for k in range(start, len(new)):
            ratio = difflib.SequenceMatcher(a=b.key, b=new[k].key, autojunk=False).ratio()
            if ratio > best:
                best, best_at = ratio, k
        if best >= SIMILAR:
            out += [BulletChange("added", None, x) for x in new[start:best_at]]
            out.append(BulletChange("changed", b, new[best_at]))
            start = best_at + 1
        else:
            out.append(BulletChange("removed", b, None))
    return out + [BulletChange("added", None, x) for x in new[start:]]
