"""Attacks on four commits, kept as regression tests. Each compares against the unmemoised evaluation, the full
explained report (Catalog.report) or a stated rule; none names a trial or assumes the catalogue's contents.

1. ea95c26, leaves numbered at compile time and kept in the patient's memo under 4*slot + 2*exclusion + negated:
   a leaf asked in every context a rule can put it in (inclusion, exclusion, under `not`, under `none_on_record`,
   which reads absence both ways, under `if/then`, `any_available`) gives what it gives unmemoised; leaves that
   compare equal though written differently (18 and 18.0, True and 1, 0.0 and -0.0) decide alike; and plans
   compiled by two threads at once (two first hook calls in the service's worker threads) number distinct
   leaves apart (this found a race, fixed by a lock in Engine.plan).
2. a3336a3, Catalog.verdicts: the same status, date a bar lifts, cohort entry, outcomes and counts as the report,
   for every horizon, trial subset and order, unread sources, deceased patients and draft trials; the screen's
   cohort_first and the screen end to end (patients.csv) give the rows the report gives.
3. dceaa4a, shared empty tuples and results shared between criteria: nothing kept in a memo changes when it is
   read again, by reports or verdicts, or when a caller changes the lists of a report it was given.
4. 0f6bbd5, TrustedIssuer in settings.py: the settings and a screen worker's module import neither the API nor
   httpx nor PyJWT, TRIAL_MATCHER_TRUSTED_ISSUERS still parses, and the API still accepts a token with it.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import export_folder, res_content, screen_kept
from pydantic import ValidationError
from test_auth import ISS, KEYS, PUBLIC, get, jwk, token

from bench.patients import make_patient
from cds_service.api.app import create_app
from cds_service.cli import main
from cds_service.eligibility import logic
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.demographics import Age
from cds_service.eligibility.doses import CurrentDose
from cds_service.eligibility.engine import Engine, compile_rule
from cds_service.eligibility.labs import GradeCount, Lab
from cds_service.eligibility.logic import Ctx, Memo, Res, Truth
from cds_service.eligibility.report import Evidence
from cds_service.eligibility.rules import All, AnyAvailable, AnyOf, Implies, NoneOnRecord, Not, ReviewLeaf, Window
from cds_service.fhir.facts import SOURCES
from cds_service.screening.funnel import ROW_FIELDS, row
from cds_service.screening.run import cohort_first
from cds_service.settings import Settings, TrustedIssuer, get_settings
from demo import synthetic as syn

ROOT = Path(__file__).resolve().parent.parent
REASON = "a person confirms what the record leaves open"

# --- generated records ----------------------------------------------------------------------------------------


def _deceased(res: list[dict], rng: random.Random, day: date) -> list[dict]:
    dead = {"deceasedBoolean": True} if rng.random() < 0.5 else {"deceasedDateTime": str(day - timedelta(days=3))}
    return [{**r, **dead} if r["resourceType"] == "Patient" else r for r in res]


def _mutated(res: list[dict], rng: random.Random, day: date) -> list[dict]:
    """The record with resources dropped, values scaled, negatives turned positive, results made preliminary
    or older: every leaf kind gets to say each of its answers."""
    out = []
    for r in res:
        if r["resourceType"] != "Patient" and rng.random() < 0.25:
            continue
        r = copy.deepcopy(r)
        q = r.get("valueQuantity")
        if q and rng.random() < 0.3:
            q["value"] = round(q["value"] * rng.choice([0.05, 0.3, 0.7, 1.6, 5]), 3)
        cc = r.get("valueCodeableConcept")
        if cc and rng.random() < 0.15 and any(c.get("code") == "260385009" for c in cc.get("coding", [])):
            r["valueCodeableConcept"] = {"coding": [{"system": syn.SNOMED, "code": "10828004"}], "text": "Positive"}
        if r.get("valueString") == "Non-reactive" and rng.random() < 0.3:
            r["valueString"] = "Reactive"
        if r["resourceType"] == "Observation" and rng.random() < 0.05:
            r["status"] = "preliminary"
        if "effectiveDateTime" in r and rng.random() < 0.1:
            r["effectiveDateTime"] = str(day - timedelta(days=rng.randint(100, 900)))
        out.append(r)
    return out


def _records(as_of: date, n: int, seed: int = 0) -> list[tuple[str, list[dict], set[str] | None, date]]:
    """(patient id, resources, sources read completely or None for all, evaluation date)."""
    out = []
    for i in range(n):
        rng = random.Random(seed * 100_003 + i)
        pid = f"v{seed}n{i}"
        day = as_of + timedelta(days=rng.randint(-300, 300))
        shape = i % 6
        if i % 12 == 1:  # the all-in-range patient untouched, every source read
            out.append((pid, syn.eligible_patient(day, pid), None, day))
            continue
        if i % 12 == 7:  # the same with a preliminary result of yesterday that would change a criterion
            res = syn.eligible_patient(day, pid)
            negatives = [r for r in res if r.get("valueCodeableConcept", {}).get("text") == "Negative"]
            newer = copy.deepcopy(rng.choice(negatives))
            newer.update(id=f"{pid}-prelim", status="preliminary", effectiveDateTime=str(day - timedelta(days=1)))
            newer["valueCodeableConcept"] = {"coding": [{"system": syn.SNOMED, "code": "10828004"}], "text": "Positive"}
            out.append((pid, [*res, newer], None, day))
            continue
        if shape == 0:  # bench patient: years of labs, conditions, medications
            res = make_patient(rng.randint(5, 150), pid, day)
        elif shape in (1, 2, 3):  # the all-in-range patient, of other ages and sexes, mutated, with more on record
            age = rng.choice([15, 17, 30, 45, 66, 72, 85])
            born = date(day.year - age, rng.randint(1, 12), rng.randint(1, 28))
            birth = rng.choice([born.isoformat(), born.isoformat(), str(born.year), born.isoformat()[:7]])
            res = _mutated(syn.eligible_patient(day, pid, birth, rng.choice(["female", "male"])), rng, day)
            if rng.random() < 0.4:  # a washout that lifts within weeks
                res.append(syn.med_statement(pid, "121191", "riTUXimab 10 MG/ML", day - timedelta(days=75),
                                             day - timedelta(days=45), status="completed"))  # fmt: skip
            if rng.random() < 0.4:
                res += [r for r in make_patient(rng.randint(5, 80), pid, day) if r["resourceType"] != "Patient"]
        elif shape == 4:  # the disease on record and nothing else
            res = [r for r in syn.eligible_patient(day, pid) if r["resourceType"] in ("Patient", "Condition")]
        else:  # outside every cohort: other diagnoses only
            res = [r for r in make_patient(160, pid, day) if r["resourceType"] != "Condition"]
            others = [r for r in make_patient(200, pid, day) if r["resourceType"] == "Condition"][1:]
            res += others[: rng.randint(0, len(others))]
        if rng.random() < 0.15:
            res = _deceased(res, rng, day)
        gathered = None if rng.random() < 0.5 else set(rng.sample(sorted(SOURCES), rng.randint(0, len(SOURCES))))
        out.append((pid, res, gathered, day))
    return out


def _leaves(rule: object):
    """The leaves of a rule tree."""
    if isinstance(rule, All | AnyOf | AnyAvailable):
        for x in rule.items:
            yield from _leaves(x)
    elif isinstance(rule, Not | NoneOnRecord):
        yield from _leaves(rule.item)
    elif isinstance(rule, Implies):
        yield from _leaves(rule.condition)
        yield from _leaves(rule.then)
    elif not isinstance(rule, ReviewLeaf) and rule is not None:
        yield rule


def _catalogue_leaves(catalog: Catalog) -> list:
    return list(dict.fromkeys(leaf for t in catalog.chosen() for _, r in t.plan for leaf in _leaves(r)))


def _every_context(leaf: object) -> list:
    """The leaf where every combinator can put it: each reads absence its own way."""
    no, none = Not("not", leaf), NoneOnRecord("none_on_record", leaf, REASON)
    return [
        leaf,
        no,
        none,
        Not("not", none),
        NoneOnRecord("none_on_record", no, REASON),
        Implies("if", leaf, leaf),
        Implies("if", no, none),
        AnyAvailable("any_available", (leaf, no)),
        All("all", (none, no)),
        AnyOf("any", (Not("not", no), NoneOnRecord("none_on_record", Not("not", none), REASON))),
    ]


# --- 1. leaves numbered and memoised --------------------------------------------------------------------------


def test_a_leaf_in_every_context_gives_what_it_gives_unmemoised(catalog, as_of):
    """Every distinct leaf of the catalogue, wrapped in every combinator, all compiled with one numbering and read
    in random order from one memo in both criterion types, gives what it gives compiled afresh with nothing
    kept: no context ever reads a result kept for another."""
    leaves = _catalogue_leaves(catalog)
    rules = [r for leaf in leaves for r in _every_context(leaf)]
    slots: dict = {}
    numbered = [compile_rule(r, slots) for r in rules]
    alone = [compile_rule(r) for r in rules]
    assert len(slots) == len(leaves)  # equal leaves, one number each: the memo is exercised
    seen = set()
    for k, (pid, res, gathered, day) in enumerate(_records(as_of, 18, seed=1)):
        facts = catalog.facts(res, pid, gathered)
        memo = Memo(facts, day)
        asks = [(i, e) for i in range(len(rules)) for e in (False, True)]
        random.Random(k).shuffle(asks)
        for i, e in asks:
            got = numbered[i](Ctx(facts, day, catalog.mappings, e, False, memo))
            fresh = alone[i](Ctx(facts, day, catalog.mappings, e, False, Memo(facts, day)))
            assert res_content(got) == res_content(fresh), (pid, rules[i], e)
            seen.add(got.truth)
        assert memo.leaves
    assert seen == set(Truth)


def _twins() -> list[tuple[object, object]]:
    """Leaves equal as dataclasses (so one number) though written differently."""
    steroids = frozenset({"prednisone", "methylprednisolone"})
    return [
        (Age("age", 18, 65), Age("age", 18.0, 65.0)),
        (Age("age", 1, None), Age("age", True, None)),
        (Age("age", None, 0.0), Age("age", None, -0.0)),
        (
            Lab("lab", "creatinine", ">=", 0.0, None, None, None, ">= 0 mg/dL"),
            Lab("lab", "creatinine", ">=", -0.0, None, None, None, ">= 0 mg/dL"),
        ),  # fmt: skip
        (
            Lab("lab", "alt", "<=", None, 3.0, None, Window(30, "day"), "<= 3 x ULN"),
            Lab("lab", "alt", "<=", None, 3, None, Window(30.0, "day"), "<= 3 x ULN"),
        ),  # fmt: skip
        (
            GradeCount("grade_count", ("bilag_renal",), frozenset({"A", "B"}), 1, None),
            GradeCount("grade_count", ("bilag_renal",), frozenset({"B", "A"}), True, None),
        ),  # fmt: skip
        (
            CurrentDose("current_dose", steroids, "glucocorticoids", ">", 0.0),
            CurrentDose("current_dose", steroids, "glucocorticoids", ">", -0.0),
        ),  # fmt: skip
    ]


def test_equal_leaves_written_differently_decide_alike(catalog, as_of):
    """Two leaves equal as dataclasses share a number, so whichever is asked second reads the first's result:
    that is right only if they decide alike. Their truth and the date it flips (all an outcome is made of) and
    the evidence must match what each gives unmemoised. (Their texts may differ: Window(30.0, "day") reads
    "30.0 days", a bound of -0.0 reads "-0"; no trial file writes such twins, and a screen keeps no text.) The
    twins a trial file can write (an age of 18 and of 18.0: parse_age keeps the YAML number) match in full."""
    twins = _twins()
    for a, b in twins:
        assert a == b and hash(a) == hash(b), (a, b)  # the premise: one number for both
    for pid, res, gathered, day in _records(as_of, 24, seed=2):
        facts = catalog.facts(res, pid, gathered)
        for a, b in twins:
            for rule in (All("all", (a, b)), AnyOf("any", (b, Not("not", a))), Implies("if", a, b)):
                for e in (False, True):
                    got = compile_rule(rule, {})(Ctx(facts, day, catalog.mappings, e, False, Memo(facts, day)))
                    fresh = compile_rule(rule)(Ctx(facts, day, catalog.mappings, e, False, Memo(facts, day)))
                    assert res_content(got)[:3] == res_content(fresh)[:3], (pid, rule, e)
                    if a is twins[0][0]:
                        assert res_content(got) == res_content(fresh), (pid, rule, e)


def test_plans_compiled_by_two_threads_at_once_keep_distinct_leaves_apart(catalog, as_of):
    """A bug this attack found in ea95c26 (compile_rule: `slots.setdefault(rule, len(slots))`), fixed by a lock
    around the compile in Engine.plan.

    Plans are compiled lazily, on a trial's first evaluation, and the service evaluates hooks in worker threads
    (pipeline.py: asyncio.to_thread(self._cards ...)), so the first calls after start-up compile plans at once,
    all numbering leaves in the engine's one `_slots` dict. `len(slots)` is read before `setdefault` inserts,
    and hashing a leaf (a dataclass __hash__, Python code) lets another thread run in between: two distinct
    leaves can get one number. Their results then share memo keys for the engine's whole life, and a criterion
    reads another leaf's result. Seen: Age(18, 65) and Age(18, 75) on one number, and a 70-year-old all-in-range
    patient, likely eligible for the trial that takes patients up to 75, shown ineligible ("age 70 > 65"): the
    costliest error, for every later patient, until the process restarts.

    Here two threads evaluate one patient each, one hook for every trial, one /match naming the trials in
    another order (an LN-only and an SLE patient compile in different orders too). Thread switches are made as
    frequent as CPython allows, so the rare interleaving becomes likely; the rule checked is that distinct
    leaves keep distinct numbers and that every report is what the reference engine (compiled alone) says."""
    trials = [t.id for t in catalog.chosen()]
    if len(trials) < 2:
        pytest.skip("needs two trials")
    records = [syn.eligible_patient(as_of, "ta"), make_patient(60, "tb", as_of)]
    facts = [catalog.facts(records[0], "ta"), catalog.facts(records[1], "tb")]
    reference = [catalog.report(f, as_of) for f in facts]
    before = sys.getswitchinterval()
    shared: list = []
    try:
        sys.setswitchinterval(1e-6)
        for _ in range(150):
            fresh = dataclasses.replace(catalog, engine=Engine(catalog.mappings, catalog.engine.horizon.days))
            start = threading.Barrier(2)

            def hook(f: object, ids: list[str] | None, c: Catalog = fresh, b: threading.Barrier = start) -> None:
                b.wait()
                c.report(f, as_of, ids)  # type: ignore[arg-type]

            threads = [threading.Thread(target=hook, args=a) for a in ((facts[0], None), (facts[1], trials[::-1]))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            by_number: dict[int, list] = {}
            for leaf, number in fresh.engine._slots.items():
                by_number.setdefault(number, []).append(leaf)
            shared = [leaves for leaves in by_number.values() if len(leaves) > 1]
            if shared:
                break
            sys.setswitchinterval(before)
            assert [fresh.report(f, as_of) for f in facts] == reference
            sys.setswitchinterval(1e-6)
    finally:
        sys.setswitchinterval(before)
    if shared:  # what the engine then says, against the reference, for generated records
        differ = total = 0
        for pid, res, gathered, day in _records(as_of, 24, seed=9):
            f = catalog.facts(res, pid, gathered)
            for got, ref in zip(fresh.report(f, day).trials, catalog.report(f, day).trials, strict=True):
                total += 1
                differ += screen_kept(got) != screen_kept(ref)
        raise AssertionError(f"distinct leaves given one number: {shared[0]}; then {differ} of {total} trial results "
                             "of generated records differ from the reference engine's")  # fmt: skip


# --- 2. verdicts against the report ---------------------------------------------------------------------------


def _safe(report_trial: object, deceased: bool) -> None:
    """Ineligible only on a definite fail (or no disease on record, or death); not assessed only when the entry
    could not be read."""
    r = report_trial
    entry = r.cohort.outcome if r.cohort is not None else "in"  # type: ignore[attr-defined]
    if r.status == "ineligible":  # type: ignore[attr-defined]
        assert deceased or entry == "out" or any(c.outcome == "fail" for c in r.criteria), r.id  # type: ignore
    assert (r.status == "not-assessed") == (entry == "unknown"), r.id  # type: ignore[attr-defined]


def test_verdicts_are_the_report_for_every_horizon_subset_and_source(catalog, as_of):
    """Catalog.verdicts against Catalog.report, trial by trial and as the screen's rows: for horizons from none
    to ten years, trial subsets in any order, sources left unread, deceased patients, criteria with a standing
    review and criteria for a person."""
    ids = list(catalog.trials)
    engines = {h: dataclasses.replace(catalog, engine=Engine(catalog.mappings, h)) for h in (0, 30, 365, 3650)}
    seen: set = set()
    for k, (pid, res, gathered, day) in enumerate(_records(as_of, 48, seed=3)):
        rng = random.Random(k)
        facts = catalog.facts(res, pid, gathered)
        subsets = [None, rng.sample(ids, rng.randint(1, len(ids))), ids[::-1]]
        for h, cat in engines.items():
            for chosen in subsets:
                report = cat.report(facts, day, chosen).trials
                verdicts = cat.verdicts(facts, day, chosen)
                assert [screen_kept(v) for v in verdicts] == [screen_kept(r) for r in report], (pid, h, chosen)
                assert [row(pid, v) for v in verdicts] == [row(pid, r) for r in report], (pid, h, chosen)
                for r in report:
                    _safe(r, facts.deceased)
                    seen.add(r.status)
                    seen |= {"deceased"} if facts.deceased and r.criteria else set()
                    seen |= {"lifts"} if r.eligible_from else set()
                    outcomes = {c.outcome for c in r.criteria}
                    if r.status == "possibly-eligible" and not outcomes & {"fail", "unknown"}:
                        seen.add("possibly by a flagged review alone")
                    for c in r.criteria:
                        trial_c = next(x for x in cat.trials[r.id].criteria if x.id == c.id)
                        if c.outcome == "fail" and "beyond" in (c.explanation or ""):
                            seen.add("beyond the horizon")
                        if trial_c.also_review and c.outcome == "review":
                            seen.add("standing review")
                        if trial_c.rule is None:
                            seen.add("for a person")
    wanted = {"likely-eligible", "possibly-eligible", "ineligible", "not-assessed", "deceased", "lifts",
              "beyond the horizon", "for a person", "possibly by a flagged review alone"}  # fmt: skip
    assert wanted <= seen, wanted - seen
    if any(c.also_review for t in catalog.chosen() for c in t.criteria):
        assert "standing review" in seen


@pytest.fixture(scope="module")
def drafted(tmp_path_factory) -> Catalog:
    """The catalogue with every other trial marked `draft: true` (an import not yet encoded)."""
    folder = tmp_path_factory.mktemp("drafted") / "trials"
    shutil.copytree(ROOT / "trials", folder)
    for i, path in enumerate(sorted(folder.glob("*.yaml"))):
        if i % 2 == 0:
            path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\ndraft: true\n", encoding="utf-8")
    cat = Catalog.load(ROOT / "mappings", folder)
    assert any(t.draft for t in cat.chosen()), cat.problems
    return cat


def test_draft_trials_read_alike_in_verdicts_report_and_the_screens_rows(drafted, as_of):
    """A draft trial is `draft` in the verdicts as in the report, its row the same, and the other trials as they
    are without drafts beside them."""
    plain = Catalog.load(ROOT / "mappings", ROOT / "trials")
    for pid, res, _, day in _records(as_of, 18, seed=4):
        facts, plain_facts = drafted.facts(res, pid), plain.facts(res, pid)
        report, verdicts = drafted.report(facts, day).trials, drafted.verdicts(facts, day)
        assert [screen_kept(v) for v in verdicts] == [screen_kept(r) for r in report], pid
        assert [row(pid, r) for r in cohort_first(drafted, pid, res, day, None)] == [row(pid, r) for r in report]
        undrafted = {r.id: screen_kept(r) for r in plain.report(plain_facts, day).trials}
        for v in verdicts:
            if drafted.trials[v.id].draft:
                assert v.status == "draft" and not v.criteria, v.id
            else:
                assert screen_kept(v) == undrafted[v.id], (pid, v.id)


def test_cohort_first_gives_the_reports_rows(catalog, as_of):
    """The screen's evaluation of a whole record (an export: every source complete), through the entry-only
    shortcut or straight in, for every trial or a subset, gives the rows the report of that record gives."""
    ids = list(catalog.trials)
    for k, (pid, res, _, day) in enumerate(_records(as_of, 36, seed=5)):
        chosen = [None, random.Random(k).sample(ids, random.Random(k).randint(1, len(ids)))][k % 2]
        expected = [row(pid, r) for r in catalog.report(catalog.facts(res, pid), day, chosen).trials]
        assert [row(pid, r) for r in cohort_first(catalog, pid, res, day, chosen)] == expected, pid
        opens = any(r["failed"] != "cohort entry" for r in expected)
        if opens:  # the partition step's filter marks such a patient inside: the shortcut is skipped
            assert [row(pid, r) for r in cohort_first(catalog, pid, res, day, chosen, inside=True)] == expected


@pytest.fixture
def horizon(request, monkeypatch) -> int:
    days = request.param
    monkeypatch.setenv("TRIAL_MATCHER_TEMPORARY_HORIZON_DAYS", str(days))
    get_settings.cache_clear()
    yield days
    monkeypatch.delenv("TRIAL_MATCHER_TEMPORARY_HORIZON_DAYS")
    get_settings.cache_clear()


@pytest.mark.parametrize("horizon", [365, 20], indirect=True)
def test_the_screens_patients_csv_is_the_reports_rows(tmp_path, catalog, as_of, horizon):
    """`trial-matcher screen` on an NDJSON export: each patients.csv row is `row()` of the full explained
    report of that patient's record (Catalog.report), whatever route the screen took (cohort filter, outside
    rows, entry-only shortcut, verdicts)."""
    records = [(pid, res) for pid, res, _, _ in _records(as_of, 30, seed=6 + horizon)]
    records = [(pid, [r for r in res if r["resourceType"] != "Patient" or r["id"] == pid]) for pid, res in records]
    folder = export_folder(tmp_path / "export", [r for _, res in records for r in res])
    out = tmp_path / "out"
    argv = ["screen", str(folder), "--out", str(out), "--as-of", as_of.isoformat(), "--workers", "1", "--no-store"]
    ids = list(catalog.trials)
    chosen = ids if horizon == 365 else ids[::-1][: max(1, len(ids) - 1)]
    if horizon != 365:
        argv += [x for t in chosen for x in ("--trial", t)]
    assert main(argv) == 0
    with (out / "patients.csv").open(newline="", encoding="utf-8") as f:
        got = sorted((r["patient"], r["trial"], r) for r in csv.DictReader(f))
    reference = Catalog.load(ROOT / "mappings", ROOT / "trials", horizon_days=horizon)
    expected = []
    for pid, res in records:
        for r in reference.report(reference.facts(res, pid), as_of, None if horizon == 365 else chosen).trials:
            cells = row(pid, r)
            expected.append((pid, r.id, {k: str(cells[k]) for k in ROW_FIELDS}))
    assert [g[:2] for g in got] == [e[:2] for e in sorted(expected, key=lambda e: e[:2])]
    for (pid, trial, g), (_, _, e) in zip(got, sorted(expected, key=lambda e: e[:2]), strict=True):
        assert g == e, (pid, trial)
    assert {e[2]["status"] for e in expected} >= {"ineligible", "possibly-eligible"}


# --- 3. results shared, never changed -------------------------------------------------------------------------


def test_results_kept_in_a_memo_never_change_when_read_again(catalog, as_of):
    """One memo read by a report, then verdicts, then a report again, with the first report's lists changed by
    its caller in between (its criteria's results cannot be): every kept leaf result is what it was when first
    made, and each later answer is what a fresh evaluation (its own memo) gives; so is an evaluation handed a
    memo another engine (other numbers) filled. Results share lists (`not`, a combinator of one deciding
    item, the empty tuple); a write into any of them would show here."""
    engine = catalog.engine
    stranger = Engine(catalog.mappings, engine.horizon.days)  # numbers the leaves in another order
    for t in reversed(catalog.chosen()):
        stranger.plan(t)
    for pid, res, gathered, day in _records(as_of, 30, seed=7):
        facts = catalog.facts(res, pid, gathered)
        memo = Memo(facts, day, engine=engine)
        first = [engine.evaluate(facts, t, day, memo) for t in catalog.chosen()]
        kept = {k: res_content(v) for k, v in memo.leaves.items()}
        verdicts = [engine.verdict(facts, t, day, memo) for t in catalog.chosen()]
        for r in first:  # a caller free to change what it was given: its trial results, not their criteria
            r.notes.append("changed by a caller")
            r.criteria.reverse()
            for c in r.criteria:  # values, which reports of other records may hold too (Engine._explained)
                with pytest.raises(AttributeError):
                    c.evidence.append(Evidence(resource="Patient/x", label="changed by a caller"))  # type: ignore[attr-defined]
                with pytest.raises(ValidationError):
                    c.missing = ("changed by a caller",)
        again = [engine.evaluate(facts, t, day, memo) for t in catalog.chosen()]
        fresh = [engine.evaluate(facts, t, day) for t in catalog.chosen()]
        assert again == fresh, pid
        filled = Memo(facts, day, engine=stranger)  # a memo another engine filled is set aside, never read
        assert [stranger.evaluate(facts, t, day, filled) for t in catalog.chosen()] == fresh, pid
        assert [engine.evaluate(facts, t, day, filled) for t in catalog.chosen()] == fresh, pid
        again = [screen_kept(engine.verdict(facts, t, day, filled)) for t in catalog.chosen()]
        assert again == [screen_kept(r) for r in fresh]
        assert [screen_kept(v) for v in verdicts] == [screen_kept(r) for r in fresh], pid
        assert {k: res_content(v) for k, v in memo.leaves.items()} == kept, pid
    assert logic.NONE == () and Res(Truth.TRUE).evidence is logic.NONE


def test_merge_builds_new_lists_and_leaves_its_items_alone():
    """Res.merge on a result just made: its own lists and the items' lists stay as they were."""
    rng = random.Random(8)
    for _ in range(300):
        items = []
        for _ in range(rng.randint(0, 4)):
            lists = [tuple(f"{f}{rng.randint(0, 3)}" for _ in range(rng.randint(0, 2))) for f in "mnws"]
            items.append(Res(rng.choice(list(Truth)), None, (), *[rng.choice([tuple, list])(x) for x in lists]))
        before = [(r.missing, r.notes, r.why, r.standing) for r in items]
        copies = [tuple(list(x) for x in b) for b in before]
        own = Res(Truth.REVIEW, None, (), ("own",))
        merged = own.merge(items)
        assert list(merged.missing) == ["own", *[m for r in items for m in r.missing]]
        assert [tuple(list(x) for x in (r.missing, r.notes, r.why, r.standing)) for r in items] == copies
        for r in items:
            for mine, theirs in zip((merged.missing, merged.notes, merged.why, merged.standing),
                                    (r.missing, r.notes, r.why, r.standing), strict=True):  # fmt: skip
                assert mine is not theirs or mine == ()
        for combined in (logic.all_of(items), logic.any_of(items)) if items else ():
            assert [tuple(list(x) for x in (r.missing, r.notes, r.why, r.standing)) for r in items] == copies
            assert combined.truth in set(Truth)


# --- 4. TrustedIssuer in the settings -------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["cds_service.settings", "cds_service.screening.run", "cds_service.screening.bulk"])
def test_settings_and_a_screen_worker_import_no_api_httpx_or_jwt(module):
    code = (
        f"import {module}, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('httpx', 'jwt') or m.startswith('cds_service.api')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_trusted_issuers_from_the_environment_still_admit_a_token(tmp_path, monkeypatch):
    """TRIAL_MATCHER_TRUSTED_ISSUERS read from the environment into settings.TrustedIssuer (the class the token
    check uses), and the API accepts a token signed by that issuer's key and refuses one of an issuer not on it."""
    from cds_service.api import auth

    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk("ec384", "ES384", KEYS["ec384"][0])]}))
    issuers = [{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json"), "jku_allowed": []}]
    monkeypatch.setenv("TRIAL_MATCHER_TRUSTED_ISSUERS", json.dumps(issuers))
    monkeypatch.setenv("TRIAL_MATCHER_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("TRIAL_MATCHER_AUTH_REQUIRED", "true")
    monkeypatch.setenv("TRIAL_MATCHER_DATABASE_URL", f"sqlite:///{tmp_path}/auth.sqlite3")
    settings = Settings(log_level="WARNING")
    assert auth.TrustedIssuer is TrustedIssuer
    assert settings.issuers == [TrustedIssuer(iss=ISS, jwks_file=tmp_path / "jwks.json")]
    assert isinstance(settings.issuers[0].jwks_file, Path)
    with TestClient(create_app(settings)) as client:
        assert get(client, token()).status_code == 200
        assert get(client, token(iss="https://elsewhere.example")).status_code == 401
    monkeypatch.setenv("TRIAL_MATCHER_TRUSTED_ISSUERS", json.dumps([{"iss": ""}]))
    with pytest.raises(ValidationError):
        _ = Settings().issuers
