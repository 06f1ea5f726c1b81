"""What a criterion reads (`rules.register`'s `reads`, `engine.reads_of`): the engine answers a criterion none of
whose facts a record holds with what it answered for a record holding nothing, with the same sources read, on
the same date (`Engine._compiled`). That is exact only if every leaf kind names every fact it reads: one that
left a fact out would answer "none on record" for a patient who has it, and hide a trial or show one to an
excluded patient. So every declaration is held here to what its leaf evaluates, on varied records."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from helpers import res_content
from pydantic import ValidationError
from test_speed_attack import _patients

from cds_service.eligibility import engine as engine_module
from cds_service.eligibility.catalog import Catalog
from cds_service.eligibility.engine import Engine, reads_of
from cds_service.eligibility.logic import Ctx, Memo
from cds_service.eligibility.rules import LEAVES, LeafKind, Rule, parts
from cds_service.fhir.facts import SOURCES, PatientFacts
from demo import synthetic as syn
from demo.load import demo_bundles, resources


def _leaves(rule: Rule) -> Iterator[Rule]:
    items = parts(rule)
    if items is not None:
        for r in items:
            yield from _leaves(r)
    elif rule.kind in LEAVES:
        yield rule


def catalogue_leaves(catalog: Catalog) -> list[Rule]:
    """Every distinct leaf of every trial's criteria (predicates written out)."""
    seen: dict[int, Rule] = {}
    for trial in catalog.trials.values():
        for _, rule in trial.plan:
            for leaf in _leaves(rule) if rule is not None else ():
                seen.setdefault(id(leaf), leaf)
    return list(seen.values())


def _unreadable(pid: str, day: date) -> list[dict]:
    """Records a source cannot read: a Condition in a local code, a statement of a drug not named, an allergy
    with no substance. Each leaves its source unable to say "none on record"."""
    subject = {"reference": f"Patient/{pid}"}
    return [
        {"resourceType": "Condition", "id": f"{pid}-local", "subject": subject,
         "code": {"coding": [{"system": "http://example.org/local-codes", "code": "77"}]},
         "clinicalStatus": {"coding": [{"code": "active"}]}},
        {"resourceType": "MedicationStatement", "id": f"{pid}-unnamed", "subject": subject, "status": "active",
         "medicationReference": {"reference": "Medication/nowhere"}, "effectiveDateTime": str(day)},
        {"resourceType": "AllergyIntolerance", "id": f"{pid}-nosubstance", "patient": subject,
         "clinicalStatus": {"coding": [{"code": "active"}]}},
    ]  # fmt: skip


def _held(pid: str, day: date) -> list[dict]:
    """Facts of the kinds the bench and demo records lack: procedures, and allergies to drugs and to food."""
    subject = {"reference": f"Patient/{pid}"}
    status = {"coding": [{"code": "confirmed"}]}
    active = {"coding": [{"code": "active"}]}

    def proc(n: int, text: str, days: int) -> dict:
        return {"resourceType": "Procedure", "id": f"{pid}-p{n}", "status": "completed", "code": {"text": text},
                "subject": subject, "performedDateTime": str(day - timedelta(days=days))}  # fmt: skip

    def allergy(n: int, text: str) -> dict:
        return {"resourceType": "AllergyIntolerance", "id": f"{pid}-a{n}", "patient": subject, "type": "allergy",
                "clinicalStatus": active, "verificationStatus": status, "code": {"text": text}}  # fmt: skip

    procedures = [proc(1, "Plasma exchange", 20), proc(2, "Laparotomy", 400), proc(3, "Kidney transplant", 3000)]
    return procedures + [allergy(1, "Cyclophosphamide"), allergy(2, "Peanut"), allergy(3, "Fludarabine ruled out")]


def records(catalog: Catalog, as_of: date) -> list[tuple[PatientFacts, date]]:
    """Bench and synthetic records of many shapes (tests/test_speed_attack._patients), the demo patients, and
    some of each with records their sources cannot read, or only some sources read."""
    out = [(catalog.facts(res, pid, gathered), day) for pid, res, gathered, day in _patients(as_of, 40)]
    rng = random.Random(7)
    for pid, bundle in demo_bundles(as_of).items():
        res = resources(bundle)
        out.append((catalog.facts(res, pid), as_of))
        more = copy.deepcopy(res) + _unreadable(pid, as_of) + _held(pid, as_of)[rng.randint(0, 3) :]
        out.append((catalog.facts(more, pid), as_of - timedelta(days=rng.randint(0, 200))))
        gathered = set(rng.sample(sorted(SOURCES), rng.randint(0, len(SOURCES))))
        out.append((catalog.facts(res, pid, gathered), as_of))
    for i in range(4):
        pid = f"u{i}"
        res = [r for r in syn.eligible_patient(as_of, pid) if r["resourceType"] == "Patient" or rng.random() < 0.5]
        extra = _unreadable(pid, as_of)[: i + 1] + _held(pid, as_of)[i : i + 3]
        out.append((catalog.facts(res + extra, pid), as_of))
    return out


def _ctx(facts: PatientFacts, day: date, catalog: Catalog, exclusion: bool, negated: bool) -> Ctx:
    return Ctx(facts, day, catalog.mappings, exclusion, negated, Memo(facts, day))


def mismatches(catalog: Catalog, recs: list[tuple[PatientFacts, date]]) -> tuple[list, dict[str, set[bool]]]:
    """Leaves whose result on a record holding none of what they read differs from their result on a record
    holding nothing (with the same sources read); and, per leaf kind, whether records holding what its leaves
    read (True) and records holding none of it (False) were both met."""
    wrong, met = [], {}
    for leaf in catalogue_leaves(catalog):
        reads = reads_of(leaf, catalog.mappings)
        if reads is None:
            continue
        evaluate = LEAVES[leaf.kind].evaluate
        for facts, day in recs:
            held = not reads.isdisjoint(facts.on_record())
            met.setdefault(leaf.kind, set()).add(held)
            if held:
                continue
            for exclusion in (False, True):
                for negated in (False, True):
                    ctx = _ctx(facts, day, catalog, exclusion, negated)
                    if res_content(evaluate(leaf, ctx)) != res_content(evaluate(leaf, ctx.without_facts())):
                        wrong.append((leaf, facts.patient, exclusion, negated))
    return wrong, met


@pytest.fixture(scope="module")
def recs(catalog: Catalog, as_of: date) -> list[tuple[PatientFacts, date]]:
    return records(catalog, as_of)


def test_a_leaf_answers_a_record_without_what_it_reads_as_it_answers_an_empty_one(catalog, recs):
    wrong, met = mismatches(catalog, recs)
    assert wrong == []
    declared = {k for k, kind in LEAVES.items() if kind.reads is not None}
    used = {leaf.kind for leaf in catalogue_leaves(catalog) if reads_of(leaf, catalog.mappings) is not None}
    assert used <= declared and {"condition", "medication", "lab", "positive"} <= used
    for kind in used:  # the records hold what each kind's leaves read, and not
        assert met[kind] == {True, False}, kind
    assert any(f.unread for f, _ in recs) and any(f.gathered != set(SOURCES) for f, _ in recs)


@pytest.mark.parametrize(
    "kind",
    [
        "condition",
        "procedure",
        "medication",
        "treated",
        "current_dose",
        "lab",
        "positive",
        "grade_count",
        "answer",
        "allergy",
    ],
)
def test_a_declaration_that_leaves_out_a_fact_its_leaf_reads_is_caught(catalog, recs, kind, monkeypatch):
    """The check above has teeth: a kind that says it reads nothing is found out on these records."""
    if not any(leaf.kind == kind for leaf in catalogue_leaves(catalog)):
        pytest.skip(f"no trial has a {kind} leaf")
    real = LEAVES[kind]
    monkeypatch.setitem(LEAVES, kind, LeafKind(real.parse, real.evaluate, lambda rule, m: frozenset()))
    wrong, _ = mismatches(catalog, recs)
    assert any(leaf.kind == kind for leaf, *_ in wrong)


def _answers(engine: Engine, catalog: Catalog, recs: list[tuple[PatientFacts, date]], order: list[int]) -> dict:
    """Each record's report and verdicts of each trial, the records evaluated in `order`."""
    out = {}
    for i in order:
        facts, day = recs[i]
        memo = Memo(facts, day, engine=engine)
        for trial in catalog.trials.values():
            if not trial.draft:
                full = engine.evaluate(facts, trial, day, memo).model_dump()
                v = engine.verdict(facts, trial, day, memo)
                out[i, trial.id] = (full, v.status, v.eligible_from, [(c.id, c.outcome) for c in v.criteria])
    return out


def _evaluating_every_criterion(catalog: Catalog, recs: list, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Engine]:
    """`_answers` in record order from an engine whose plans answer no criterion without evaluating it."""
    monkeypatch.setattr(engine_module, "reads_of", lambda rule, m: None)
    every = Engine(catalog.mappings, catalog.engine.horizon.days)
    return _answers(every, catalog, recs, list(range(len(recs)))), every


def test_the_engine_answers_as_it_does_when_it_evaluates_every_criterion(catalog, recs, monkeypatch):
    """Whole reports and verdicts, explanations included, equal those of an engine that evaluates every
    criterion of every record; also with the records in another order, so that each answer kept was first
    made for another record (with its sources read differently: answers are kept by what was read)."""
    forward = list(range(len(recs)))
    skipping = Engine(catalog.mappings, catalog.engine.horizon.days)
    got = _answers(skipping, catalog, recs, forward)
    shuffled = Engine(catalog.mappings, catalog.engine.horizon.days)
    again = _answers(shuffled, catalog, recs, random.Random(3).sample(forward, len(forward)))
    want, every = _evaluating_every_criterion(catalog, recs, monkeypatch)
    assert got == want
    assert again == want
    assert skipping._answers and not every._answers  # the first engine answered some criteria without them
    assert skipping._explanations and not every._explanations  # and explained them once, for every record


def _one_fact_records(catalog: Catalog, as_of: date) -> Iterator[list[dict]]:
    """An SLE patient with exactly one fact more, for every code the maps read: each variable's codes (an old
    and a recent result, final and preliminary), each condition group's codes and words, each drug's codes
    and names as a statement and as an immunization, each procedure group, and an allergy to each drug."""
    m = catalog.mappings
    d = lambda n: str(as_of - timedelta(days=n))  # noqa: E731
    snomed, icd = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"
    facts: list[dict] = []
    for n, v in enumerate(m.variables.values()):
        value = {"valueQuantity": {"value": 1.5, "unit": v.unit or ""}} if v.unit else {"valueString": "positive"}
        for i, code in enumerate(v.codes):
            status = "preliminary" if (n + i) % 5 == 0 else "final"
            coded = {"coding": [{"system": code.system, "code": code.code}]}
            facts.append({"resourceType": "Observation", "status": status, "code": coded, **value,
                          "effectiveDateTime": d(3 + 400 * (i % 2))})  # fmt: skip
    for g in m.conditions.groups.values():
        codes = [{"coding": [{"system": snomed, "code": c}]} for c in g.snomed[:1]]
        codes += [{"coding": [{"system": icd, "code": c}]} for c in g.icd10cm[:1]] + [{"text": w} for w in g.words[:1]]
        facts += [{"resourceType": "Condition", "code": c, "clinicalStatus": {"coding": [{"code": "active"}]},
                   "onsetDateTime": d(30 + 900 * (i % 2))} for i, c in enumerate(codes)]  # fmt: skip
    for ing in m.medications.ingredients.values():
        for cc in [{"text": n} for n in ing.names[:1]] + [
            {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": c}]} for c in ing.cvx[:1]
        ]:
            facts.append({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": cc,
                          "effectivePeriod": {"start": d(40)}})  # fmt: skip
            facts.append(
                {"resourceType": "Immunization", "status": "completed", "vaccineCode": cc, "occurrenceDateTime": d(40)}
            )
        facts += [{"resourceType": "AllergyIntolerance", "code": {"text": n}, "type": "allergy",
                   "clinicalStatus": {"coding": [{"code": "active"}]}} for n in ing.names[:1]]  # fmt: skip
    for g in m.procedures.groups.values():
        facts += [{"resourceType": "Procedure", "status": "completed", "code": {"text": w}, "performedDateTime": d(60)}
                  for w in g.words[:1]]  # fmt: skip
    for i, fact in enumerate(facts):
        pid = f"one{i}"
        owner = "patient" if fact["resourceType"] in ("AllergyIntolerance", "Immunization") else "subject"
        yield [
            *syn.eligible_patient(as_of, pid)[:2],
            {**fact, "id": f"{pid}-x", owner: {"reference": f"Patient/{pid}"}},
        ]


def test_one_fact_at_a_time_the_engine_answers_as_when_it_evaluates_every_criterion(catalog, as_of, monkeypatch):
    """Each code the maps read, alone beside the diagnosis: the fact every criterion that reads it must see."""
    records = list(_one_fact_records(catalog, as_of))
    recs = [(catalog.facts(res, res[0]["id"]), as_of) for res in records]
    assert len(recs) > 300 and sum(len(f.on_record()) > 1 for f, _ in recs) > 0.9 * len(recs)  # a fact beside SLE
    skipping = Engine(catalog.mappings, catalog.engine.horizon.days)
    got = _answers(skipping, catalog, recs, list(range(len(recs))))
    assert got == _evaluating_every_criterion(catalog, recs, monkeypatch)[0]


def test_two_records_share_the_explanation_of_a_criterion_neither_holds_a_fact_of(catalog, as_of):
    """`Engine._explained`: one result, made for the first record and given to the second, which cannot change."""
    engine = Engine(catalog.mappings, catalog.engine.horizon.days)
    first, second = (catalog.facts(syn.eligible_patient(as_of, pid), pid) for pid in ("a1", "b2"))
    shared = []
    for trial in (t for t in catalog.trials.values() if not t.draft):
        made, given = engine.evaluate(first, trial, as_of), engine.evaluate(second, trial, as_of)
        shared += [x for x, y in zip(made.criteria, given.criteria, strict=True) if x is y]
    assert shared
    for result in shared:
        with pytest.raises(ValidationError):
            result.explanation = "changed for one record"
