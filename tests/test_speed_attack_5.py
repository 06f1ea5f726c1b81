"""Attacks on five speed commits, kept as regression tests. Nothing here names a trial or a criterion: every
check compares two ways of computing one answer, over the catalogue as it is.

1. 1979f64, verdict plans (logic.lean, engine.compile_rule(..., join), Engine.plan(trial, verdict=True)):
   - test_verdict_is_the_evaluation_for_generated_records: Engine.verdict against Engine.evaluate, trial by
     trial (status, eligible_from, cohort, each criterion's outcome), on generated records, with a memo
     shared by both and with verdict or evaluate asked first of a fresh engine.
   - test_lean_decides_as_full_on_random_trees_of_catalogue_leaves: random trees of the catalogue's own leaves
     under every combinator (all, any, any_available, not, none_on_record, if/then, review), compiled with
     and without `lean` on one numbering: `decide` gives the same (outcome, until, flagged) for inclusion
     and exclusion, with and without a standing review.
   - test_verdicts_and_reports_from_threads_on_a_fresh_engine: verdict and full plans compiled by threads
     at once give what one thread gives.
2. 6496aff, LabResult as a frozen msgspec Struct:
   - test_lab_results_are_immutable_hashable_values: equality, hash, immutability, replace, pickle, copy.
   - test_normalised_facts_are_equal_values_read_twice: two normalisers give equal facts, labs hash alike,
     a copy made for `also_from` differs only in its variable.
3. b4ab489 + d4f8828, Medications indexed once (SharedMedications, normalize(shared=...), patients_in,
   evaluate_patients, Mirror.records/medications):
   - test_shared_index_reads_as_the_record_followed_by_it: hostile clashes (own vs shared ids, shared vs
     shared, valid vs invalid in strict mode, absolute and versioned references, ids missing or numeric):
     facts, `skipped` and `unread` equal those of the record followed by the shared list.
   - test_patients_in_with_medications_gives_the_appended_records: the records patients_in gives either way.
   - test_screen_partition_rows_are_those_of_the_appended_records_strict: a strict worker's rows.
   - test_mirror_records_and_medications_are_records_with_medications: the worklist's mirror, both ways.
4. 4694c7f, memoised text lookups (mappings._memoised, MEMO_ENTRIES, MEMO_KEY_CHARS, the ICD-10 cache):
   - test_memoised_lookups_answer_as_unmemoised_with_a_small_memo: texts built from the maps' own words,
     negated and cased, through all five lookups with a memo that keeps clearing.
   - test_memoised_lookups_from_threads: many threads, one maps, a small memo: the answers and the bound.
   - test_icd10_cache_keeps_no_huge_codes (found a bug, fixed): distinct huge ICD-10 codes were all kept.
   - test_memoised_lookups_take_keyword_arguments (found a bug, fixed): a keyword call raised TypeError.
   - test_procedure_groups_keeps_no_iterator_it_was_given (found a bug, fixed): an iterator of codings was
     kept (and with it what it iterates), and the same iterator asked again got the first answer.
5. ab726c0, runtime.collector_paused around screen_partition:
   - test_collector_paused_restores_the_collector_from_threads_and_errors: nested, concurrent and failing
     uses leave the collector as found.
   - test_screen_partition_restores_the_collector_when_a_partition_is_bad: a malformed partition line.
"""

from __future__ import annotations

import copy
import gc
import pickle
import random
import threading
import tracemalloc
import weakref
from datetime import date, timedelta
from types import SimpleNamespace

import msgspec
import orjson
import pytest
from test_verdict_attack import _catalogue_leaves, _records

from bench.patients import make_patient
from cds_service.eligibility.engine import Engine, compile_rule, decide
from cds_service.eligibility.logic import Ctx, Memo, lean
from cds_service.eligibility.rules import All, AnyAvailable, AnyOf, Implies, NoneOnRecord, Not, ReviewLeaf
from cds_service.fhir import mappings as mp
from cds_service.fhir.codes import ICD10CM, SNOMED
from cds_service.fhir.facts import SOURCES, LabResult
from cds_service.fhir.mappings import load_mappings
from cds_service.fhir.normalize import Normalizer
from cds_service.runtime import collector_paused
from cds_service.screening import run
from cds_service.screening.bulk import ReadLimits, patients_in
from cds_service.screening.funnel import row
from cds_service.settings import REPO_ROOT
from cds_service.worklist.mirror import Mirror
from demo import synthetic as syn

KINDS = set(SOURCES)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


# --- 1. verdict plans ---------------------------------------------------------------------------------------


def _verdict_of_evaluation(result) -> tuple:  # noqa: ANN001
    cohort = result.cohort.outcome if result.cohort is not None else None
    return result.id, result.status, result.eligible_from, cohort, [(c.id, c.outcome) for c in result.criteria]


def _in_threads(work, n: int) -> None:  # noqa: ANN001
    """`work(i)` in n threads at once, each given its number; back when all are done."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def test_verdict_is_the_evaluation_for_generated_records(catalog, as_of):
    """Engine.verdict (lean plan) gives exactly Engine.evaluate's status, eligible_from, cohort and outcomes,
    whichever is asked first of a fresh engine, with a memo of its own or one shared with the evaluation."""
    trials = [t for t in catalog.chosen() if not t.draft]
    seen_status: set[str] = set()
    for k, (pid, res, gathered, day) in enumerate(_records(as_of, 60, seed=55)):
        facts = catalog.facts(res, pid, gathered)
        for horizon in (30, 365):
            engine = Engine(catalog.mappings, horizon)
            shared = Memo(facts, day, engine=engine)
            order = trials if k % 2 else trials[::-1]
            for t in order:
                if k % 3 == 0:  # verdict first, on the memo the evaluation reads next
                    v = engine.verdict(facts, t, day, shared)
                    e = engine.evaluate(facts, t, day, shared)
                else:
                    e = engine.evaluate(facts, t, day, shared)
                    v = engine.verdict(facts, t, day)
                assert _verdict_of_evaluation(v) == _verdict_of_evaluation(e), (pid, t.id, horizon)
                seen_status.add(e.status)
    assert {"likely-eligible", "possibly-eligible", "ineligible"} <= seen_status


def _random_tree(rng: random.Random, leaves: list, depth: int):  # noqa: ANN202
    if depth == 0 or rng.random() < 0.25:
        if rng.random() < 0.08:
            return ReviewLeaf("review", rng.choice(["a person reads this", "consent"]))
        return rng.choice(leaves)
    kind = rng.choice(["all", "any", "avail", "not", "none", "if"])
    items = tuple(_random_tree(rng, leaves, depth - 1) for _ in range(rng.randint(1, 3)))
    if kind == "all":
        return All("all", items)
    if kind == "any":
        return AnyOf("any", items)
    if kind == "avail":
        return AnyAvailable("any_available", items)
    if kind == "not":
        return Not("not", items[0])
    if kind == "none":
        return NoneOnRecord("none_on_record", items[0], "a person confirms the absence")
    return Implies("if", items[0], _random_tree(rng, leaves, depth - 1))


def test_lean_decides_as_full_on_random_trees_of_catalogue_leaves(catalog, as_of):
    """A rule compiled with `lean` decides what it decides compiled in full, for trees the catalogue may grow
    into: every combinator over the catalogue's own leaves, both criterion types, with and without a standing
    review note, on generated records; both plans share one numbering and one memo per record."""
    leaves = _catalogue_leaves(catalog)
    assert leaves
    rng = random.Random(2026)
    slots: dict = {}
    trees = [_random_tree(rng, leaves, 4) for _ in range(150)]
    compiled = [(compile_rule(t, slots), compile_rule(t, slots, lean)) for t in trees]
    outcomes: set[tuple] = set()
    records = _records(as_of, 24, seed=91)
    for pid, res, gathered, day in records:
        facts = catalog.facts(res, pid, gathered)
        memo = Memo(facts, day)
        for full, thin in compiled:
            for exclusion in (False, True):
                ctx = Ctx(facts, day, catalog.mappings, exclusion, False, memo)
                a, b = full(ctx), thin(ctx)
                assert (a.truth, a.until, a.doubt) == (b.truth, b.until, b.doubt), pid
                for also in (None, "a standing note"):
                    c = SimpleNamespace(type="exclusion" if exclusion else "inclusion", also_review=also)
                    got, want = decide(c, b), decide(c, a)  # type: ignore[arg-type]
                    assert got == want, (pid, exclusion, also)
                    outcomes.add((want[0], want[1] is not None, want[2]))
    kinds = {o for o, _, _ in outcomes}
    assert {"pass", "fail", "unknown", "review"} <= kinds, outcomes
    assert ("review", False, True) in outcomes  # a flagged review (the case lean keeps the lists for) was drawn


def test_verdicts_and_reports_from_threads_on_a_fresh_engine(catalog, as_of):
    """Hook calls evaluate in worker threads: a fresh engine asked for verdicts and reports by many threads at
    once (both plans of every trial compiling together) gives what a single-threaded engine gives."""
    trials = [t for t in catalog.chosen() if not t.draft]
    records = [(pid, catalog.facts(res, pid, g), day) for pid, res, g, day in _records(as_of, 16, seed=7)]
    reference = Engine(catalog.mappings)
    want = {
        (pid, t.id): _verdict_of_evaluation(reference.evaluate(f, t, day)) for pid, f, day in records for t in trials
    }
    for _ in range(3):
        engine = Engine(catalog.mappings)
        got: dict[tuple, list] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work(
            n: int,
            engine: Engine = engine,
            got: dict = got,
            errors: list = errors,
            barrier: threading.Barrier = barrier,
        ) -> None:
            try:
                barrier.wait()
                for pid, f, day in records[n % 2 :: 2]:
                    for t in trials if n % 3 else trials[::-1]:
                        r = engine.verdict(f, t, day) if n % 2 else engine.evaluate(f, t, day)
                        got.setdefault((pid, t.id), []).append(_verdict_of_evaluation(r))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        _in_threads(work, 8)
        assert not errors, errors
        assert got.keys() == want.keys()
        for key, seen in got.items():
            assert all(s == want[key] for s in seen), key


# --- 2. LabResult as a msgspec Struct ----------------------------------------------------------------------


def test_lab_results_are_immutable_hashable_values():
    day = date(2026, 1, 2)
    a = LabResult("crp", day, "Observation/1", 3.0, "mg/L", "3", "mg/L", derived_from=("Observation/0",))
    b = LabResult(variable="crp", when=day, resource="Observation/1", value=3, unit="mg/L", original_value="3",
                  original_unit="mg/L", derived_from=("Observation/0",))  # fmt: skip
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != msgspec.structs.replace(a, preliminary=True)
    assert a != msgspec.structs.replace(a, flag="H")
    assert msgspec.structs.replace(a, variable="x").variable == "x" and a.variable == "crp"
    with pytest.raises(AttributeError):
        a.value = 4.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del a.value
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) == a and copy.copy(a) == a
    assert (a == "crp") is False and a != None  # noqa: E711
    with pytest.raises(TypeError):
        LabResult("crp", day)  # type: ignore[call-arg]  # resource is required, as it was


def test_normalised_facts_are_equal_values_read_twice(catalog, as_of):
    """Two normalisers (two maps) read the same records to equal facts; every lab hashes like its twin, and
    each copy made for a variable's `also_from` differs from its source only in the variable."""
    other = Normalizer(load_mappings(REPO_ROOT / "mappings"))
    also = {(o, k) for k, v in catalog.mappings.variables.items() for o in v.also_from}
    copies = 0
    for pid, res, _, _day in _records(as_of, 30, seed=12):
        f1, f2 = catalog.normalizer.normalize(copy.deepcopy(res), pid, KINDS), other.normalize(res, pid, KINDS)
        assert f1 == f2, pid
        for var, labs in f1.labs.items():
            assert [hash(r) for r in labs] == [hash(r) for r in f2.labs[var]]
            assert all(r.variable == var for r in labs)
        for src, dst in also:
            for r in f1.labs.get(src, ()):
                assert msgspec.structs.replace(r, variable=dst) in f1.labs.get(dst, [])
                copies += 1
    if also:
        assert copies


# --- 3. Medications indexed once ---------------------------------------------------------------------------


def _med(mid, rx: str, text: str | int) -> dict:  # noqa: ANN001
    return {"resourceType": "Medication", "id": mid, "code": {"coding": [{"system": RXNORM, "code": rx}], "text": text}}


def _hostile_record(as_of: date, pid: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(own resources, shared Medications): references to shared ones written absolute, versioned or plain,
    ids clashing between own and shared and within shared (valid and invalid in strict mode), Medications
    without an id or with a numeric one, references to nothing."""
    own = syn.eligible_patient(as_of, pid)
    drugs = [("8640", "predniSONE 10 MG"), ("68149", "Mycophenolate mofetil"), ("20610", "cyclophosphamide"),
             ("121191", "riTUXimab"), ("5521", "Hydroxychloroquine"), ("5640", "Ibuprofen")]  # fmt: skip
    shared: list[dict] = []
    for i in range(rng.randint(3, 7)):
        mid = f"s{rng.randint(0, 5)}"  # a small pool: ids clash
        rx, text = rng.choice(drugs)
        how = rng.random()
        if how < 0.2:  # invalid in strict mode
            text = 12
        shared.append(_med(mid, rx, text))
        if rng.random() < 0.35:  # the patient has its own Medication of that id, another drug, maybe invalid
            rx2, text2 = rng.choice(drugs)
            own.append(_med(mid, rx2, 7 if rng.random() < 0.3 else text2))
        ref = rng.choice([f"Medication/{mid}", f"http://x.org/fhir/Medication/{mid}/_history/3",
                          f"https://y/Medication/{mid}/", f"Medication/gone-{i}"])  # fmt: skip
        req = syn.med_request(pid, rx, text if isinstance(text, str) else "x", syn.days_ago(as_of, 10 + i))
        del req["medicationCodeableConcept"]
        req["medicationReference"] = {"reference": ref}
        own.append(req)
    if rng.random() < 0.5:
        shared.append({"resourceType": "Medication", "code": {"text": "riTUXimab"}})  # no id: Medication/None
        ref_none = syn.med_request(pid, "121191", "riTUXimab", syn.days_ago(as_of, 3))
        del ref_none["medicationCodeableConcept"]
        ref_none["medicationReference"] = {"reference": "Medication/None"}
        own.append(ref_none)
    if rng.random() < 0.5:
        shared.append({"resourceType": "Medication", "id": 77, "code": {"text": "cyclophosphamide"}})
    rng.shuffle(own)
    rng.shuffle(shared)
    return own, shared


@pytest.mark.parametrize("strict", [False, True])
def test_shared_index_reads_as_the_record_followed_by_it(catalog, as_of, strict):
    normalizer = Normalizer(catalog.mappings, strict)
    rng = random.Random(404 + strict)
    clashed = resolved = skipped = unread = 0
    for k in range(60):
        pid = f"h{k}"
        own, shared = _hostile_record(as_of, pid, rng)
        index = normalizer.shared_medications(shared)
        got = normalizer.normalize(own, pid, KINDS, index)
        want = normalizer.normalize(own + shared, pid, KINDS)
        assert got == want, k
        assert got.skipped == want.skipped and got.unread == want.unread, k
        # the same index serves the next record unchanged, and a record read with it again reads alike
        assert normalizer.normalize(own, pid, KINDS, index) == want
        own_ids = {r.get("id") for r in own if r["resourceType"] == "Medication"}
        clashed += bool(own_ids & {r.get("id") for r in shared})
        resolved += len(got.medications)
        skipped += len(got.skipped)
        unread += sum(got.unread.values())
    assert clashed > 5 and resolved > 60 and unread > 0
    assert skipped > 0  # strict mode sets invalid Medications aside; either mode skips unreadable requests


def _partition(tmp_path, records: list[tuple[str, list[dict]]], shared: list[dict]):  # noqa: ANN001, ANN202
    part = tmp_path / "part-0.ndjson"
    with part.open("wb") as f:
        for m in shared[: len(shared) // 2]:  # Medications before and after the patients' lines
            f.write(b"null\t" + orjson.dumps(m) + b"\n")
        for pid, own in records:
            for r in own:
                if r["resourceType"] == "Medication":
                    f.write(b"null\t" + orjson.dumps(r) + b"\n")
                else:
                    f.write(orjson.dumps(pid) + b"\t" + orjson.dumps(r) + b"\n")
        for m in shared[len(shared) // 2 :]:
            f.write(b"null\t" + orjson.dumps(m) + b"\n")
    return part


def _hostile_partition(tmp_path, as_of, rng, prefix: str, n: int):  # noqa: ANN001, ANN202
    """(records, their shared Medications, a partition file of them) for n hostile records."""
    records, shared = [], []
    for k in range(n):
        own, meds = _hostile_record(as_of, f"{prefix}{k}", rng)
        records.append((f"{prefix}{k}", own))
        shared += meds
    return records, shared, _partition(tmp_path, records, shared)


def test_patients_in_with_medications_gives_the_appended_records(tmp_path, as_of):
    records, shared, part = _hostile_partition(tmp_path, as_of, random.Random(8), "r", 10)
    before = dict(patients_in(part, ReadLimits()))
    meds: list[dict] = []
    after = dict(patients_in(part, ReadLimits(), None, None, None, meds))
    assert before.keys() == after.keys() == {pid for pid, _ in records}
    for pid, res in before.items():
        assert res == after[pid] + meds, pid
        assert not any(r["resourceType"] == "Medication" for r in after[pid])


def test_screen_partition_rows_are_those_of_the_appended_records_strict(tmp_path, as_of):
    """A strict worker (init's strict flag) screens a partition with clashing and invalid Medications to the
    rows of each record read whole with every Medication appended."""
    records, shared, part = _hostile_partition(tmp_path, as_of, random.Random(31), "w", 8)
    run._init(str(REPO_ROOT / "mappings"), str(REPO_ROOT / "trials"), 365, True)
    try:
        cat = run._CATALOG
        assert cat is not None and cat.normalizer.strict
        rows, *_ = run.screen_partition(([part], as_of, None, ReadLimits(), None))
        every_med = [r for _, own in records for r in own if r["resourceType"] == "Medication"] + shared
        want = []
        for pid, own in records:
            whole = [r for r in own if r["resourceType"] != "Medication"] + every_med
            want += [row(pid, v) for v in run.cohort_first(cat, pid, whole, as_of, None)]
        key = lambda r: (r["patient"], r["trial"])  # noqa: E731
        assert sorted(rows, key=key) == sorted(want, key=key)
    finally:
        run._init(str(REPO_ROOT / "mappings"), str(REPO_ROOT / "trials"), 365)


def test_mirror_records_and_medications_are_records_with_medications(tmp_path, catalog, as_of):
    rng = random.Random(17)
    export = tmp_path / "export"
    export.mkdir()
    by_type: dict[str, list[dict]] = {}
    pids = []
    for k in range(6):
        own, meds = _hostile_record(as_of, f"m{k}", rng)
        pids.append(f"m{k}")
        for r in [*own, *meds]:
            if r["resourceType"] == "Medication" and not isinstance(r.get("id"), str):
                continue  # the mirror keeps resources by a string id
            by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, rs in by_type.items():
        (export / f"{rtype}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rs))
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export)
    wanted = set(pids) | {"nobody"}
    old = dict(mirror.records(wanted))
    meds = mirror.medications()
    new = dict(mirror.records(wanted, medications=False))
    assert old.keys() == new.keys() == set(pids)
    index = catalog.normalizer.shared_medications(meds)
    for pid in pids:
        assert old[pid] == new[pid] + meds
        assert catalog.facts(new[pid], pid, shared=index) == catalog.facts(old[pid], pid), pid


# --- 4. memoised text lookups ------------------------------------------------------------------------------

LOOKUPS = ["condition_text_reading", "text_names_a_group", "ingredient_for_text", "ingredients_in_text"]


def _unkept(m: mp.Mappings, name: str, *args):  # noqa: ANN202
    return getattr(mp.Mappings, name).__wrapped__(m, *args)


def _texts(m: mp.Mappings, rng: random.Random, n: int) -> list[str]:
    words = [w for g in m.conditions.groups.values() for w in g.words]
    words += [x for g in m.conditions.groups.values() for x in g.words_exclude]
    words += [name for ing in m.medications.ingredients.values() for name in ing.names]
    words += [w for g in m.procedures.groups.values() for w in g.words]
    words += ["measles", "hypertension", "allergy", "ruled out", "no", "history of", "drug-induced"]
    out = []
    for _ in range(n):
        parts = [rng.choice(words) for _ in range(rng.randint(1, 3))]
        cue = rng.choice(["", "no ", "not ", "denies ", "history of ", "suspected "])
        after = rng.choice(["", " ruled out", " (disorder)", ", negative", " allergy"])
        t = cue + rng.choice([" ", ", ", " and "]).join(parts) + after
        t = rng.choice([t, t.upper(), t.title(), f"  {t}\t"])
        out.append(t)
    return out


def test_memoised_lookups_answer_as_unmemoised_with_a_small_memo(monkeypatch):
    m = load_mappings(REPO_ROOT / "mappings")
    monkeypatch.setattr(mp, "MEMO_ENTRIES", 37)
    rng = random.Random(99)
    texts = _texts(m, rng, 300)
    codings = [(SNOMED, c) for c in list(m.procedure_snomed)[:20]] + [(SNOMED, "0"), ("http://loinc.org", "1-8")]
    hits = 0
    for t in texts + texts[::-1] + texts:
        for name in LOOKUPS:
            got = getattr(m, name)(t)
            assert got == _unkept(m, name, t), (name, t)
            hits += bool(got)
        cs = tuple(rng.sample(codings, rng.randint(0, 3)))
        assert m.procedure_groups(cs, t) == _unkept(m, "procedure_groups", cs, t), (cs, t)
        for name, memo in m._memo.items():
            assert len(memo) <= 37, name
    assert hits > 100


def test_memoised_lookups_from_threads(monkeypatch):
    """One maps object read by many threads at once (the service's hook workers) with a memo that keeps
    clearing: every answer is the unmemoised one, no thread fails, and the memo stays near its bound."""
    m = load_mappings(REPO_ROOT / "mappings")
    monkeypatch.setattr(mp, "MEMO_ENTRIES", 16)
    texts = _texts(m, random.Random(3), 120)
    want = {(name, t): _unkept(m, name, t) for name in LOOKUPS for t in texts}
    errors: list[BaseException] = []
    wrong: list[tuple] = []
    barrier = threading.Barrier(12)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(1500):
                name, t = rng.choice(LOOKUPS), rng.choice(texts)
                if getattr(m, name)(t) != want[(name, t)]:
                    wrong.append((name, t))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    _in_threads(work, 12)
    assert not errors and not wrong
    assert all(len(memo) <= 16 + 12 for memo in m._memo.values())


# Found by this attack, fixed (only codes of at most MEMO_KEY_CHARS are kept): condition_groups kept ICD-10
# codes of any length: 100 distinct 200,000-character codes kept 20 MB; up to 8,192 x 16 MiB in all.
def test_icd10_cache_keeps_no_huge_codes():
    """Hostile Conditions, each with a distinct ICD-10-CM code of 200,000 characters (a line may hold 16 MiB):
    the maps should keep at most about MEMO_ENTRIES x MEMO_KEY_CHARS of them, as the text lookups do.

    Before the fix, Mappings.condition_groups cached every ICD-10 code it was asked about, with no length
    limit (only MEMO_ENTRIES bounds the count), so 8,192 codes of up to a line's 16 MiB stay held for the life
    of the maps (the service's, a screen worker's): 100 such codes read keep about 20 MB after the records
    are gone. The text memos skip keys over MEMO_KEY_CHARS; the ICD-10 cache does not."""
    m = load_mappings(REPO_ROOT / "mappings")
    normalizer = Normalizer(m)
    size, n = 200_000, 100
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            code = f"M32.{i:04d}" + "9" * size
            cond = {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": "Patient/p"},
                    "code": {"coding": [{"system": ICD10CM, "code": code}]}}  # fmt: skip
            normalizer.normalize([cond], "p", KINDS)
            del code, cond
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    bound = mp.MEMO_ENTRIES * mp.MEMO_KEY_CHARS * 4  # what a memo of short keys could ever hold, generously
    assert kept < min(bound, n * size // 4), f"{kept / 1e6:.1f} MB kept by the maps after {n} records"


# Found by this attack, fixed: _memoised wrapped each lookup as kept(self, *args), so a keyword call raised.
def test_memoised_lookups_take_keyword_arguments():
    """Before the fix, `_memoised`'s wrapper was `kept(self, *args)`: calling a lookup by keyword, as its
    signature (kept by functools.wraps) says one can, raised TypeError; unmemoised, the call answers."""
    m = load_mappings(REPO_ROOT / "mappings")
    text = "Systemic lupus erythematosus"
    assert m.condition_text_reading(text=text) == _unkept(m, "condition_text_reading", text)
    assert m.ingredient_for_text(text="predniSONE 10 MG") == _unkept(m, "ingredient_for_text", "predniSONE 10 MG")
    assert m.procedure_groups(codings=(), text="plasma exchange") == _unkept(
        m, "procedure_groups", (), "plasma exchange"
    )


# Found by this attack, fixed (only texts and tuples of texts are kept by): an iterator argument was a memo
# key (hashable by identity, short repr): kept alive, and asked again when spent it answered from the memo.
def test_procedure_groups_keeps_no_iterator_it_was_given():
    """`procedure_groups` takes any iterable of codings. Before the fix, an iterator (a generator, map, iter(list)) is
    hashable by identity and its repr is short, so `_memoised` keeps it as a key: it and everything it refers
    to stay held (up to MEMO_ENTRIES of them, of any size), and the same, now spent, iterator asked again gets
    the first answer, not what reading it gives."""
    m = load_mappings(REPO_ROOT / "mappings")
    snomed = next(iter(m.procedure_snomed))
    codings = [(SNOMED, snomed)]

    def gen():  # noqa: ANN202
        yield from codings

    g = gen()
    first = m.procedure_groups(g, "")
    assert first == _unkept(m, "procedure_groups", tuple(codings), "") and first
    again = m.procedure_groups(g, "")  # spent: reading it finds no coding
    assert again == _unkept(m, "procedure_groups", (), ""), "a spent iterator answered from the memo"
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None, "the memo keeps the iterator (and what it iterates) alive"


# --- 5. collector paused -----------------------------------------------------------------------------------


def test_collector_paused_restores_the_collector_from_threads_and_errors():
    was = gc.isenabled()
    try:
        for start in (True, False):
            (gc.enable if start else gc.disable)()
            with collector_paused():
                assert not gc.isenabled()
                with collector_paused():
                    assert not gc.isenabled()
                assert not gc.isenabled()
            assert gc.isenabled() == start
            with pytest.raises(ValueError), collector_paused():
                raise ValueError("a partition failed")
            assert gc.isenabled() == start
            # threads pausing and resuming in every interleaving leave it as found
            for seed in range(20):
                rng = random.Random(seed)
                gates = [threading.Event() for _ in range(4)]
                order = list(range(4))
                rng.shuffle(order)

                def worker(i: int, gates: list = gates) -> None:
                    with collector_paused():
                        gates[i].wait(5)

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
                for th in threads:
                    th.start()
                for i in order:
                    gates[i].set()
                    threads[i].join()
                assert gc.isenabled() == start, (start, order)
    finally:
        (gc.enable if was else gc.disable)()


def test_screen_partition_restores_the_collector_when_a_partition_is_bad(tmp_path, as_of):
    part = tmp_path / "part-0.ndjson"
    own = make_patient(20, "bad1", as_of - timedelta(days=1))
    good = b"".join(b'"bad1"\t' + orjson.dumps(r) + b"\n" for r in own)
    part.write_bytes(good + b'"bad2\t{"resourceType": "Patient", "id": "bad2"}\n')  # a head that is no JSON
    run._init(str(REPO_ROOT / "mappings"), str(REPO_ROOT / "trials"), 365)
    was = gc.isenabled()
    try:
        gc.enable()
        with pytest.raises(orjson.JSONDecodeError):
            run.screen_partition(([part], as_of, None, ReadLimits(), None))
        assert gc.isenabled()
        part.write_bytes(good)
        rows, *_ = run.screen_partition(([part], as_of, None, ReadLimits(), None))
        assert rows and gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
