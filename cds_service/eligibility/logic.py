"""Four-valued logic the rules are evaluated in, and the context one criterion is evaluated with.

TRUE / FALSE / UNKNOWN (data missing) / REVIEW (a person decides), combined in Kleene logic. A result
carries `until`, the date its truth value is expected to flip (a washout ending, a birthday), so a
trial whose fails are all temporary can say when the patient becomes eligible.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import TYPE_CHECKING

from cds_service.eligibility.report import Evidence
from cds_service.fhir.facts import PatientFacts
from cds_service.fhir.mappings import Mappings

if TYPE_CHECKING:
    from cds_service.eligibility.rules import Window

CMP = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class Truth(Enum):
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"
    REVIEW = "review"


NONE: tuple = ()  # an empty list of a result, shared: a result's lists are never changed in place


@dataclass(slots=True)
class Res:
    """A rule's result: its truth, the date that truth is expected to flip, and what explains it. Never
    changed once made (memoised leaves and `not` share their items' lists), except by `merge` on a result
    just built; the lists default to one shared empty tuple, so a leaf with nothing to say allocates none."""

    truth: Truth
    until: date | None = None  # the date this truth value is expected to flip; None = not expected to
    evidence: Sequence[Evidence] = NONE
    missing: Sequence[str] = NONE
    notes: Sequence[str] = NONE
    why: Sequence[str] = NONE
    # review notes that stand whatever the record says (consent, "stop the drug before enrolment"), as
    # opposed to a review raised because the record points towards a fail (which makes "possibly")
    standing: Sequence[str] = NONE

    def merge(self, others: Sequence[Res]) -> Res:
        """This result, just built, with what `others` say added to its own."""
        evidence, missing, notes, why, standing = (
            list(self.evidence), list(self.missing), list(self.notes), list(self.why), list(self.standing)
        )  # fmt: skip
        for o in others:
            evidence += o.evidence
            missing += o.missing
            notes += o.notes
            why += o.why
            standing += o.standing
        self.evidence, self.missing, self.notes, self.why, self.standing = evidence, missing, notes, why, standing
        return self

    @property
    def doubt(self) -> bool:
        """A review the record raised: evidence on record and a note that is not a standing one."""
        return self.truth == Truth.REVIEW and bool(self.evidence) and any(n not in self.standing for n in self.notes)


Join = Callable[[Truth, date | None, list[Res]], Res]  # how a combinator's result is made from its items


def max_until(results: list[Res]) -> date | None:
    """Latest flip date; a permanent member (None) makes the whole permanent."""
    dates = [r.until for r in results]
    return None if any(d is None for d in dates) else max(dates)  # type: ignore[type-var]


def min_until(results: list[Res]) -> date | None:
    dates = [r.until for r in results if r.until is not None]
    return min(dates) if dates else None


def all_of(rs: list[Res], join: Join | None = None) -> Res:
    """`join`: how the result takes its deciding items' lists (`_joined`, or `lean` for a verdict)."""
    join = join or _joined
    false = [r for r in rs if r.truth is Truth.FALSE]
    if false:
        return join(Truth.FALSE, max_until(false), false)
    undecided = _first_undecided(rs)
    if undecided is not None:
        return join(undecided, None, [r for r in rs if r.truth is not Truth.TRUE])
    return join(Truth.TRUE, min_until(rs), rs)


def any_of(rs: list[Res], join: Join | None = None) -> Res:
    join = join or _joined
    true = [r for r in rs if r.truth is Truth.TRUE]
    if true:
        return join(Truth.TRUE, max_until(true), true)
    undecided = _first_undecided(rs)
    if undecided is not None:
        return join(undecided, None, [r for r in rs if r.truth is not Truth.FALSE])
    return join(Truth.FALSE, min_until(rs), rs)


def _joined(truth: Truth, until: date | None, rs: list[Res]) -> Res:
    """A combinator's result, with what its deciding items say. One item's lists are shared, not copied:
    a result is never changed once made (`merge` is only called on a result just built)."""
    if len(rs) == 1:
        r = rs[0]
        return Res(truth, until, r.evidence, r.missing, r.notes, r.why, r.standing)
    return Res(truth, until).merge(rs)


_BARE = {t: Res(t) for t in Truth}  # shared: a bare result is never merged into (only a just-built one is)


def lean(truth: Truth, until: date | None, rs: list[Res]) -> Res:
    """`_joined` for a verdict, which keeps each criterion's outcome and not its explanation: a result that
    is not a review carries nothing but its truth and date. Exact for a verdict: `decide` reads the lists
    of a review only (`Res.doubt`), and a combinator's review takes its lists from its review items alone
    (all_of and any_of pass every item that is not TRUE, or not FALSE, only when none is FALSE or TRUE and
    none UNKNOWN). Measured: 8 % of a screen's verdicts, the lists merged at every node."""
    if truth is Truth.REVIEW:
        return _joined(truth, until, rs)
    return _BARE[truth] if until is None else Res(truth, until)


def _first_undecided(rs: list[Res]) -> Truth | None:
    """UNKNOWN when any result is (missing data outranks a review), else REVIEW when any is, else None.
    By identity, not in a set: an Enum member hashes in Python, and this runs for every combinator."""
    review = False
    for r in rs:
        if r.truth is Truth.UNKNOWN:
            return Truth.UNKNOWN
        review = review or r.truth is Truth.REVIEW
    return Truth.REVIEW if review else None


@dataclass(slots=True)
class Memo:
    """What one patient's evaluation on one date works out once for every criterion of every trial: each
    window's first day, and each lab's newest usable result (`lab_results.current`, asked about 200 times for
    a patient's 5 trials, 56 distinct questions). Neither depends on which way absence cuts. Nothing here
    refers back to a context, so a patient's memo and facts are freed with the last context (a cycle would
    keep them until the collector runs, which a screen's worker tunes to run rarely).

    And each leaf's result, by the number its engine gave the leaf when it compiled the plans and by the
    way absence cuts (`engine.compile_rule`): 262 leaves a patient, 176 distinct. (Keyed by the leaf itself
    this measured no faster, since hashing a leaf costs about what evaluating it does; the number costs
    nothing at run time.)"""

    facts: PatientFacts
    as_of: date
    starts: dict[Window, date] = field(default_factory=dict)
    current: dict[tuple, tuple] = field(default_factory=dict)
    leaves: dict[int, Res] = field(default_factory=dict)
    engine: object = None  # the engine whose leaf numbers `leaves` is keyed by
    # read once, so the facts must not change while a memo on them is in use (none do: an order hook builds
    # new facts with `dataclasses.replace`); the engine answers criteria by them (engine.Engine._compiled)
    held: frozenset[str] | None = None  # `facts.on_record()` (`on_record`)
    sources: tuple | None = None  # what was read of each source (`read`)

    def on_record(self) -> frozenset[str]:
        held = self.held
        if held is None:
            held = self.held = self.facts.on_record()
        return held

    def read(self) -> tuple:
        """The record's sources as a criterion reads them beside its facts: which were read completely, and
        how many records of each could not be read. Hashable: the key of `Ctx.without_facts`'s results."""
        sources = self.sources
        if sources is None:
            facts = self.facts
            sources = self.sources = (frozenset(facts.gathered), tuple(sorted(facts.unread.items())))
        return sources


@dataclass(slots=True)
class Ctx:
    """One criterion's evaluation: the facts, the date, the maps, and which way absence cuts."""

    facts: PatientFacts
    as_of: date
    m: Mappings
    exclusion: bool
    negated: bool
    memo: Memo  # shared by the patient's criteria on this date

    def since(self, window: Window) -> date:
        starts = self.memo.starts
        day = starts.get(window)
        if day is None:
            day = starts[window] = window.start(self.as_of)
        return day

    @property
    def absent(self) -> Truth:
        """What "none on record" means here: FALSE only where FALSE cannot fail the criterion, so an
        incomplete record can never hide a trial."""
        return Truth.FALSE if self.exclusion != self.negated else Truth.UNKNOWN

    def absence_readable(self) -> Ctx:
        """The same evaluation where "none on record" reads as absent, whichever way it cuts (sources not
        read completely still give unknown)."""
        return Ctx(self.facts, self.as_of, self.m, not self.negated, self.negated, self.memo)

    def flipped(self) -> Ctx:
        return Ctx(self.facts, self.as_of, self.m, self.exclusion, not self.negated, self.memo)

    def without_facts(self) -> Ctx:
        """The same evaluation of a record holding no fact, with the same sources read (and unread): what a
        criterion reading none of this record's facts says of it (engine.reads_of)."""
        gathered, unread = self.memo.read()
        empty = PatientFacts(patient="Patient/unknown", gathered=set(gathered), unread=dict(unread))
        memo = Memo(empty, self.as_of, engine=self.memo.engine)
        return Ctx(empty, self.as_of, self.m, self.exclusion, self.negated, memo)


def dedupe_evidence(ev: Sequence[Evidence]) -> list[Evidence]:
    seen: set[tuple] = set()
    out = []
    for e in ev:
        key = (e.resource, e.label, e.value, e.date)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
