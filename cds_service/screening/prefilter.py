"""Reading only the lines of patients some trial could be about.

Most of a health system's patients have no disease any trial studies. Their rows are decided by their
Patient and Condition resources alone (the cohort entry, `run.cohort_first`), so their other lines
(years of Observations, every medication) need not be parsed at all: parsing is most of what a screen
costs, and skipping it is what lets a clinic-like export be screened near the cost of reading it.

The test is on the raw bytes and errs one way only: a line is left unparsed when it provably names only
patients outside every cohort; whenever the bytes cannot prove it (an escape that could hide a
`Patient/` reference or a resource type, a line naming no patient, a Patient, Condition or Medication)
the line is parsed as before. So the rows are those of a screen that parses everything; only the read
counts differ (the skipped lines are counted as `outside_cohort`, not sorted into other types and the
rest). Whole blocks of lines are tested at once where they can be (a few regular-expression passes in
C), and line by line where a block holds anything the block test cannot settle.

A patient is inside when one of their Conditions, read on its own, would open some trial's entry (in,
or unknown because it could not be interpreted): the entry is decided per Condition, so any Condition
that does it alone is exactly what makes the whole record's entry not `out`. Patients come inside as
Conditions are read; a line judged outside before its patient came inside is judged again at the end
(route.py keeps the version of the patients each was judged against).

Before any of that, a block naming no resource type a criterion reads (`unread_only`: a real export's
Claims, ExplanationOfBenefits, Encounters, DiagnosticReports, most of its bytes) is counted as lines of
other types and not parsed, whoever its patients are: parsed, each of its lines would be set aside as one
(or as malformed, which is the one count that differs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from cds_service.screening.bulk import READ_TYPES

try:  # the rules below, compiled (native/): one pass over a block where the regular expressions take several
    from trial_matcher_scan import scan as _compiled_scan
    from trial_matcher_scan import unread_only as _compiled_unread_only
except ImportError:  # a checkout not bootstrapped (scripts/bootstrap.sh builds it): the regular expressions
    _compiled_scan = _compiled_unread_only = None


def _resource_of(types: Iterable[str]) -> re.Pattern[bytes]:
    """`"resourceType": "<one of types>"` as JSON may write it (any whitespace around the colon), wherever it
    sits in a line: a contained resource matches too, which is read anyway."""
    names = "|".join(map(re.escape, sorted(types))).encode()
    return re.compile(rb'"resourceType"[ \t\r\n]*:[ \t\r\n]*"(?:' + names + rb')"')


# the line may itself be a resource that is always read
_ALWAYS_READ = _resource_of(("Patient", "Condition", "Medication"))
# what `subjects.patients_named` reads from a reference: the text after `Patient/` up to the next `/` or the
# string's end. A lookahead, so "Patient/Patient/x" yields "x" too (`patients_named` takes the last `Patient/`)
_PATIENT_REF = re.compile(rb'Patient/(?=([^/"\\\n]*))')
_ESCAPE_IN_REF = re.compile(rb'Patient/[^/"\\\n]*\\')  # an escape inside an id: the bytes cannot say whose
# one match per line that names a patient at all; the empty group makes findall list empty strings rather
# than copy each line's rest (most of the block's bytes): 0.8 ms a MiB against 1.3
_LINE_WITH_REF = re.compile(rb"Patient/[^\n]*\n()")
# inside patients a block may name and still be settled by finding their lines: past it most lines are inside
FEW = 48


_READ_TYPE = _resource_of(READ_TYPES)  # a resource of a type some criterion reads
_READ_NAMES = [t.encode() for t in sorted(READ_TYPES)]
# a line the reader passes over uncounted (what bytes.strip() empties: space, \t, \r, \v, \f): after a
# newline, or (matched at 0) the first. Not one pattern with \A: one that can start anywhere is tried at
# every byte (9 ms a MiB against 0.25)
_BLANK_LINE, _BLANK_FIRST = re.compile(rb"\n[ \t\r\x0b\x0c]*\n"), re.compile(rb"[ \t\r\x0b\x0c]*\n")


def unread_only(buf: bytes) -> int:
    """The number of lines of a block of whole lines when none of them can be a resource of a type some
    criterion reads, else 0. Only a \\u escape can hide letters in JSON, so a block without one in which
    no `"resourceType": "<a type read>"` appears holds none (blank lines aside: then 0, they are not
    counted). Compiled where it is installed: the rules of `unread_by_expressions`, in one pass."""
    if _compiled_unread_only is not None:
        return _compiled_unread_only(buf, _READ_NAMES)
    return unread_by_expressions(buf)


def unread_by_expressions(buf: bytes) -> int:
    """`unread_only` by regular expressions (passes in C; the compiled scan takes a tenth of their time)."""
    if _READ_TYPE.search(buf):  # first: in a block of read types it stops at the first line
        return 0
    escaped = b"\\" in buf and b"\\u" in buf  # one byte first: `in` scans for two bytes three times slower
    if escaped or _BLANK_LINE.search(buf) or _BLANK_FIRST.match(buf):
        return 0
    return buf.count(b"\n")


def unsettled(buf: bytes) -> bool:
    """True when escapes or always-read resources in `buf` keep the bytes from settling whose it is."""
    if b"\\" in buf and (b"\\u" in buf or b"\\/" in buf or _ESCAPE_IN_REF.search(buf)):
        return True
    return _ALWAYS_READ.search(buf) is not None


Scanned = list[tuple[int, int, "int | set[bytes] | None"]]


def scan(buf: bytes, inside: dict[bytes, int]) -> Scanned | None:
    """The lines of a block of whole lines, each judged on its own by `unsettled` and `named_ids` against the
    patients `inside` (as `CohortFilter.outside`, blank lines passed over), in one compiled pass: a list of
    (start, end, what), `what` an int n for a run of n lines naming only patients outside (end past the
    run's last newline), None for a line to parse, or the ids a line names, one of them inside. None where
    the compiled scan is not installed (the caller tests the block itself)."""
    return None if _compiled_scan is None else _compiled_scan(buf, inside)


def named_ids(line: bytes) -> set[bytes]:
    """The id after every `Patient/` in one line (of a line not `unsettled`)."""
    return set(_PATIENT_REF.findall(line))


class CohortFilter:
    """The patients found so far to be inside some trial's cohort, and the tests of lines against them.

    `entered(condition, patient)` says whether one Condition resource alone opens some trial's entry.
    `version` counts patients come inside; `added_at` says when each came (`known`: those found inside
    before, by another router: at version 0).
    """

    def __init__(self, entered: Callable[[dict, str], bool], known: Iterable[bytes] = ()) -> None:
        self._entered = entered
        self.added_at: dict[bytes, int] = dict.fromkeys(known, 0)
        self.version = 0

    def note(self, res: dict, pid: str) -> None:
        """Read one parsed resource of patient `pid`: a Condition that opens an entry brings them inside."""
        key = pid.encode()
        if res.get("resourceType") == "Condition" and key not in self.added_at and self._entered(res, pid):
            self.version += 1
            self.added_at[key] = self.version

    def learn(self, ids: Iterable[bytes]) -> None:
        """Patients another router found inside."""
        for key in ids:
            if key not in self.added_at:
                self.version += 1
                self.added_at[key] = self.version

    def outside(self, line: bytes) -> bool:
        """True only when the line is not always read and names patients, all of them outside now."""
        if unsettled(line):
            return False
        names = named_ids(line)
        return bool(names) and self.added_at.keys().isdisjoint(names)

    @staticmethod
    def settled(buf: bytes) -> int:
        """The number of lines of a block of whole lines (each ending in a newline) when its bytes can say
        whose each line is (no escape or always-read resource, and every line names some patient), else 0.
        A few passes in C."""
        if unsettled(buf):
            return 0
        lines = buf.count(b"\n")
        return lines if len(_LINE_WITH_REF.findall(buf)) == lines else 0

    def inside_lines(self, buf: bytes) -> list[tuple[int, int]] | None:
        """For a settled block: the (start, end) of each line that names a patient inside, in order, every
        other line being `outside`; None past FEW inside patients, or when they are most of the patients the
        block names (look at each line instead)."""
        named = set(_PATIENT_REF.findall(buf))
        hits = self.added_at.keys() & named
        if len(hits) > FEW or 2 * len(hits) > len(named):  # mostly inside: most lines are read, one by one
            return None
        return lines_naming(buf, hits)


def lines_naming(buf: bytes, ids: set[bytes]) -> list[tuple[int, int]]:
    """The (start, end) of each line of `buf` (whole lines) naming `Patient/` and one of `ids`, whole (a `/`
    or `"` after it), in order. One regular-expression scan for all of them, not one find each."""
    if not ids:
        return []
    named = re.compile(rb"Patient/(?:" + b"|".join(map(re.escape, ids)) + rb')(?=[/"])')
    spans, at = [], 0
    while found := named.search(buf, at):  # from the end of the line last found: one span a line
        at = buf.find(b"\n", found.end()) + 1
        spans.append((buf.rfind(b"\n", 0, found.start()) + 1, at))
    return spans
