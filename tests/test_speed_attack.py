"""Attacks on the recent speed changes, kept as regression tests (each compares against a rule or a reference,
never against a trial id):

1. csvsafe.may_hold_formula and output._patients_csv: the "safe" patients.csv must be byte-identical to every
   cell neutralised with safe_cells and written by csv.writer, whatever the ids hold (any Unicode, quotes,
   delimiters, CR/LF, tabs, full-width signs, BOMs, empty strings, numbers, None), and across the 10,000-row
   batch boundaries.
2. rows.Rows.add_uniform: uniform rows merged in (patient, trial) order with held and spooled batches, for ids
   that sort oddly; counts, repeated reads, the template and the ids never written into, empty inputs; and
   run.add_outside building them.
3. runs.RunStore.save: named parameters with NULLIF and the patient count taken as rows pass: quotes and
   SQL-looking ids, None and "" cells, a failing row (nothing half stored), a pseudonymised run, and the row
   orders the callers give (a screen's merged rows, an incremental run from the mirror with a deleted patient).
4. subjects.about / gather.scope_to_patient rewritten to one pass: compared with the previous definition
   (embedded below as `_about_before`) on generated resources. A reference that is a JSON array or object in a
   patient-typed Reference made the rewrite raise (the hook answered 500; with an owner field the previous
   definition did too): such a resource is set aside now.
5. engine.compile_rule / Engine.plan / Engine.outcome: every criterion of every trial compiled to closures gives
   what the previous tree-walking evaluator (embedded below as `_walk`, with the previous set-based all/any and
   the previous outcome) gives, for generated patients. Leaves numbered by Engine.plan and kept in the
   patient's memo: a whole report gives every criterion what it gives evaluated alone; a memo of another
   engine, patient or date is set aside. Engine.verdict (the screen's evaluation, without explanations)
   decides what Engine.evaluate does.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import export_folder, res_content, screen_kept
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bench.patients import make_patient
from cds_service.eligibility.engine import compile_rule
from cds_service.eligibility.logic import Ctx, Memo, Res, Truth, dedupe_evidence, max_until, min_until
from cds_service.eligibility.report import CriterionResult
from cds_service.eligibility.rules import LEAVES, All, AnyAvailable, AnyOf, Implies, NoneOnRecord, Not, ReviewLeaf
from cds_service.fhir import subjects
from cds_service.fhir.facts import SOURCES
from cds_service.fhir.gather import scope_to_patient
from cds_service.fhir.urls import AllowList
from cds_service.screening import prefilter
from cds_service.screening import rows as spool
from cds_service.screening.csvsafe import FORMULA_STARTS, may_hold_formula, safe_cells
from cds_service.screening.funnel import ROW_FIELDS, Funnel, row
from cds_service.screening.output import _patients_csv
from cds_service.screening.run import add_outside
from cds_service.worklist.remember import from_mirror, remember, removed
from cds_service.worklist.runs import ROW_COLUMNS, RunStore, pseudonym
from demo import synthetic as syn

# --- 1. the CSV shortcut ------------------------------------------------------------------------------------


def _csv_text(rows: list) -> str:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue()


# what matters to csv.writer's quoting and to a spreadsheet, and look-alikes of both that are neither
_ODD = [
    *FORMULA_STARTS, ",", '"', "'", " ", ";", "a", "7", "\ufeff", "\u00a0", "\u2028", "\x85", "\x0b", "\x0c", "\x00",
    "\uff02", "\uff0c", "\u2212", "\ufe62", "\ufe66", "\u3000", "\\",
]  # fmt: skip


def _judged_safe_means_neutral(rows: list) -> None:
    text = _csv_text(rows)
    neutral = _csv_text([safe_cells(r) for r in rows])
    changes = any(isinstance(v, str) and v.startswith(FORMULA_STARTS) for r in rows for v in r)
    assert may_hold_formula(text) or text == neutral, rows
    assert may_hold_formula(text) or not changes, rows


def test_every_cell_of_up_to_two_odd_characters_in_every_position_is_judged_right():
    """Exhaustive: each cell of 0-2 characters of _ODD, first, inside, last or alone in a row, beside numbers and
    None, and as a second line (after a CRLF): the shortcut never passes text that neutralising would change."""
    cells = ["".join(p) for k in range(3) for p in itertools.product(_ODD, repeat=k)]
    for c in cells:
        for r in ([c], ["x", c], [c, "x"], [-1, c, None], [c, ""], [c, c]):
            _judged_safe_means_neutral([r])
        _judged_safe_means_neutral([["id", 0], [c, 1]])


_CELL = st.one_of(
    st.text(max_size=8),
    st.text(st.sampled_from(_ODD), max_size=6),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.just(""),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(_CELL, min_size=1, max_size=5), min_size=1, max_size=6))
def test_any_unicode_rows_judged_safe_are_their_neutralised_text(rows):
    _judged_safe_means_neutral(rows)


def _table(n: int) -> list[dict]:
    cells = {"status": "ineligible", "eligible_from": "", "pass": 0, "fail": 1, "unknown": 0, "review": 2,
             "failed": "cohort entry", "unknowns": "", "outcomes": "x=pass"}  # fmt: skip
    return [{"patient": f"p{i:06d}", "trial": "T", **cells} for i in range(n)]


def _written(rows: list[dict], neutral: bool) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(ROW_FIELDS)
    for r in rows:
        cells = [r[k] for k in ROW_FIELDS]
        w.writerow(safe_cells(cells) if neutral else cells)
    return out.getvalue().encode()


@pytest.mark.parametrize(
    "hostile",
    [
        {},  # no formula anywhere: every batch copied as text
        {9_999: ("patient", "=1+1")},  # the last row of the first batch
        {10_000: ("patient", "\ufeff=not a formula start"), 10_001: ("failed", "-x")},  # the second batch's start
        {19_999: ("unknowns", '"@x'), 20_000: ("patient", "\r\n=HYPERLINK()"), 20_001: ("trial", "\uff1dx")},
        {5: ("patient", 'a,"\r\n+b'), 15_000: ("patient", "")},  # formula-looking text inside quoted cells only
        {12_000: ("patient", '=a,"b'), 20_001: ("failed", "\tx\r\n")},  # formula starts only in quoted cells
    ],
)
def test_the_safe_csv_is_every_cell_neutralised_across_batch_boundaries(tmp_path, hostile):
    rows = _table(20_002)
    for i, (field, value) in hostile.items():
        rows[i][field] = value
    raw, safe = tmp_path / "raw.csv", tmp_path / "safe.csv"
    _patients_csv(iter(rows), raw, safe)
    assert raw.read_bytes() == _written(rows, neutral=False)
    assert safe.read_bytes() == _written(rows, neutral=True)


def test_no_rows_write_the_header_alone(tmp_path):
    raw, safe = tmp_path / "raw.csv", tmp_path / "safe.csv"
    _patients_csv([], raw, safe)
    assert raw.read_bytes() == safe.read_bytes() == _written([], neutral=True)


# --- 2. uniform rows --------------------------------------------------------------------------------------

_IDS = ["", "p1", "p10", "p1\x00", "p1 ", "P1", "p2", "10", "9", "٣", "é", "e\u0301", "😀", "\uffff", "\U0010ffff",
        "a,b", 'q"', "=1", "-", "p1/_history/1", "Z"]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_uniform_rows_merge_in_order_with_held_and_spooled_batches(monkeypatch, seed):
    """Inside patients' rows (added in batches, trials out of order), two groups of outside patients and ids
    that sort oddly; spooled files merged past OPEN: read back sorted, complete, as often as asked."""
    monkeypatch.setattr(spool, "HELD", 7)
    monkeypatch.setattr(spool, "OPEN", 2)
    rng = random.Random(seed)
    ids = list(_IDS) + [f"x{rng.randint(0, 99)}" for _ in range(20)]
    ids = list(dict.fromkeys(ids))
    rng.shuffle(ids)
    cut1, cut2 = sorted(rng.sample(range(len(ids)), 2))
    inside, out_a, out_b = ids[:cut1], sorted(ids[cut1:cut2]), sorted(ids[cut2:])
    trials = ["T2", "T10", "T1", "a"]
    template = [{"patient": "", "trial": t, "status": "ineligible", "n": 0} for t in sorted(trials)]
    kept = spool.Rows()
    order = list(range(len(inside)))
    while order:
        k = rng.randint(1, 4)
        take, order = order[:k], order[k:]
        kept.add([{"patient": inside[i], "trial": t, "status": "possibly", "n": i} for i in take for t in trials])
        if rng.random() < 0.5 and out_a:
            kept.add_uniform(template, out_a)
            out_a = []
    kept.add_uniform(template, out_a)
    kept.add_uniform(template, out_b)
    want = sorted(
        [(p, t, "possibly") for p in inside for t in trials]
        + [(p, t, "ineligible") for p in ids if p not in inside for t in trials]
    )
    assert len(kept) == len(want)
    for _ in range(2):
        got = [(r["patient"], r["trial"], r["status"]) for r in kept]
        assert got == want


def test_uniform_rows_are_fresh_each_read_and_never_written_into():
    template = [{"patient": "", "trial": "A", "status": "ineligible"}, {"patient": "", "trial": "B", "status": "x"}]
    ids = ["p1", "p10", "p2"]
    before = copy.deepcopy((template, ids))
    kept = spool.Rows()
    kept.add_uniform(template, ids)
    want = [{**t, "patient": p} for p in ids for t in before[0]]
    first = list(kept)
    assert first == want
    for r in first:  # a reader that changes the rows it is given
        r["status"], r["patient"] = "changed", "zz"
    assert list(kept) == want and len(kept) == len(want)
    assert (template, ids) == before


def test_empty_uniform_inputs_add_nothing():
    kept = spool.Rows()
    kept.add_uniform([], ["p1", "p2"])
    kept.add_uniform([{"patient": "", "trial": "A"}], [])
    kept.add([])
    assert len(kept) == 0 and list(kept) == [] and not kept.spooled
    kept.add([{"patient": "p0", "trial": "A"}])
    kept.add_uniform([{"patient": "", "trial": "A"}], [])
    assert len(kept) == 1 and list(kept) == [{"patient": "p0", "trial": "A"}]


@pytest.mark.parametrize("chosen", [None, 2])
def test_add_outside_gives_each_outside_patient_the_no_condition_rows(catalog, as_of, chosen):
    """Each outside patient gets a row per trial, with their id, in (patient, trial) order: the rows of a record
    with no Condition (what run.add_outside promises), the same for everyone, and the funnel counts them all."""
    trial_ids = sorted(catalog.trials)[:chosen] if chosen else None
    ids = ["p10", "p1", "p2", "10", "9", "é"]
    rows, funnel = spool.Rows(), Funnel()
    add_outside(rows, funnel, catalog, set(ids), as_of, trial_ids)
    results = catalog.report(catalog.facts([], "outside"), as_of, trial_ids).trials
    per_trial = {r.id: {**row("", r)} for r in results}
    want = [{**per_trial[t], "patient": p} for p in sorted(ids) for t in sorted(per_trial)]
    assert list(rows) == want and len(rows) == len(want)
    assert all(set(ROW_COLUMNS) <= set(r) and set(ROW_FIELDS) <= set(r) for r in rows)
    assert funnel.screened == dict.fromkeys(per_trial, len(ids))


# --- 3. the run store --------------------------------------------------------------------------------------

_RUN = {"as_of": "2026-11-23", "source": "/exports/a", "kind": "full", "pseudonymised": 0}
_CELLS = {"status": "ineligible", "eligible_from": "", "failed": "cohort entry", "unknowns": "", "outcomes": ""}
_HOSTILE_IDS = ["o'neil", 'q"1', "x'); DROP TABLE screen_row;--", ":patient", "%(trial)s", "?", "", " ", "p\x00"]


def _stored(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT patient, trial, status, eligible_from, failed, unknowns FROM screen_row").fetchall()


def test_quoted_and_sql_looking_ids_are_stored_verbatim_and_counted(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    ids = [p for p in _HOSTILE_IDS if p]  # an empty patient is refused (NOT NULL), as before
    rows = [{"patient": p, "trial": t, **_CELLS} for p in ids for t in ("T1", "T2")]
    store.save(_RUN, rows)
    (run,) = store.runs()
    assert run.patients == len(ids)
    assert sorted(_stored(tmp_path / "s.sqlite3")) == sorted(
        (r["patient"], r["trial"], "ineligible", None, "cohort entry", None) for r in rows
    )


def test_empty_and_none_cells_are_null_and_read_back_as_before(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    rows = [
        {"patient": "p1", "trial": "T", "status": "possibly-eligible", "eligible_from": "", "failed": None,
         "unknowns": "", "outcomes": None, "pass": 3, "extra": ["ignored"]},
        {"patient": "p2", "trial": "T", "status": "possibly-eligible", "eligible_from": "2027-01-02", "failed": "c1",
         "unknowns": "c2;c3", "outcomes": "c1=fail"},
    ]  # fmt: skip
    store.save(_RUN, rows)
    (run,) = store.runs()
    state = store.state(run, [run])
    assert run.patients == 2
    assert (state[("p1", "T")].eligible_from, state[("p1", "T")].failed, state[("p1", "T")].outcomes) == (None, "", "")
    assert state[("p2", "T")].eligible_from == date(2027, 1, 2) and state[("p2", "T")].unknowns == "c2;c3"
    with sqlite3.connect(tmp_path / "s.sqlite3") as conn:
        nulls = conn.execute(
            "SELECT COUNT(*) FROM screen_row WHERE eligible_from IS NULL AND failed IS NULL"
        ).fetchone()
    assert nulls == (1,)


def test_no_rows_make_a_run_of_no_patients(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    store.save(_RUN, iter(()))
    assert [r.patients for r in store.runs()] == [0]


def test_a_row_that_cannot_be_stored_leaves_no_half_stored_run(tmp_path):
    """A row missing a column (or with an empty patient): either the whole run is stored, that row's missing
    cells NULL and every patient counted, or nothing is, never a run without its rows or with a wrong count."""
    store = RunStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    for bad in ({"patient": "p2", "trial": "T", "status": "x"}, {"patient": "", "trial": "T", **_CELLS}):
        good = {"patient": "p1", "trial": "T", **_CELLS}
        try:
            store.save(_RUN, [good, bad])
        except (sqlite3.Error, KeyError):
            assert store.runs() == [] and _stored(tmp_path / "s.sqlite3") == []
        else:
            (run,) = store.runs()
            assert run.patients == 2 and len(_stored(tmp_path / "s.sqlite3")) == 2


def test_every_row_a_caller_stores_carries_every_stored_column(catalog, as_of):
    """save binds every column by name (a missing one is refused): run.row (screens, incremental re-reads) and
    remember.removed (patients no longer on record) give them all."""
    report = catalog.report(catalog.facts(syn.eligible_patient(as_of, "p1"), "p1"), as_of)
    assert report.trials
    for r in [row("p1", t) for t in report.trials] + removed({"gone"}, catalog.chosen()):
        assert set(ROW_COLUMNS) <= set(r), sorted(set(ROW_COLUMNS) - set(r))


def _settings(tmp_path: Path, salt: str | None) -> SimpleNamespace:
    return SimpleNamespace(
        database_url=f"sqlite:///{tmp_path / 'runs.sqlite3'}",
        worklist_patient_ids="pseudonymised" if salt else "plain",
        patient_id_salt=SecretStr(salt) if salt else None,
    )


@pytest.mark.parametrize("salt", [None, "s3cret"])
def test_a_screens_merged_rows_are_counted_per_patient_plain_or_pseudonymised(tmp_path, monkeypatch, salt):
    """A screen's rows (held and spooled batches and uniform rows, merged): one count per patient, and the
    stored ids are the pseudonyms when the site pseudonymises."""
    monkeypatch.setattr(spool, "HELD", 5)
    inside = ["o'neil", "b", "x'); DROP TABLE screen_row;--"]
    outside = sorted(["a", "c", "p1", "p10", "p2"])
    rows = spool.Rows()
    for p in inside:
        rows.add([{"patient": p, "trial": t, **_CELLS, "status": "possibly-eligible"} for t in ("T2", "T1")])
    rows.add_uniform([{"patient": "", "trial": t, **_CELLS} for t in ("T1", "T2")], outside)
    s = _settings(tmp_path, salt)
    remember(s, rows, date(2026, 11, 23), "/exports/a")
    (run,) = RunStore(s.database_url).runs()
    assert run.patients == len(inside) + len(outside) and run.pseudonymised == bool(salt)
    want = {pseudonym(p, salt) if salt else p for p in inside + outside}
    assert {p for p, *_ in _stored(tmp_path / "runs.sqlite3")} == want


@pytest.mark.parametrize("salt", [None, "s3cret"])
def test_an_incremental_runs_rows_are_counted_per_patient(catalog, as_of, tmp_path, salt):
    """from_mirror gives the re-read patients in id order, then the deleted ones: not sorted as a whole, but
    each patient's rows together, so the count taken as they pass is the number of patients."""
    from cds_service.worklist.mirror import Mirror

    records = {p: syn.eligible_patient(as_of, p) for p in ("b", "a", "c")}
    mirror = Mirror(tmp_path / "mirror.sqlite3")
    mirror.take(export_folder(tmp_path / "full", [r for res in records.values() for r in res]))
    lab = syn.quantity("c", "718-7", 9.1, "g/dL", as_of - timedelta(days=1))
    changes = export_folder(tmp_path / "changes", [lab, {**lab, "id": "b-new", "subject": {"reference": "Patient/b"}}],
                      ["Patient/a"])  # fmt: skip
    reread = from_mirror(mirror, changes, set(), None, catalog, as_of, None)
    order = list(dict.fromkeys(r["patient"] for r in reread.rows))
    assert sorted(order) == ["a", "b", "c"] and order != sorted(order)  # the deleted patient comes last
    s = _settings(tmp_path, salt)
    remember(s, reread.rows, as_of, "http://fhir.example/r4", "incremental", "2026-11-22T00:00:00Z")
    (run,) = RunStore(s.database_url).runs()
    assert run.patients == 3 == len({pseudonym(p, salt) if salt else p for p in order})


# --- 4. whose record a resource is --------------------------------------------------------------------------


# The walks of a resource's patient references before the one-pass rewrites (3fa03da^, 4259169^), kept here
# as the definitions the product's subjects.about, owner and patients_named must agree with.


def _references_before(value) -> list[dict]:
    items = value if isinstance(value, list) else [value]
    items = [i["actor"] if isinstance(i, dict) and isinstance(i.get("actor"), dict) else i for i in items]
    return [i for i in items if isinstance(i, dict)]


def _patient_references_before(res: dict, fields=subjects.OWNER_FIELDS + subjects.OTHER_FIELDS) -> list[dict]:
    def names_a_patient(ref: dict) -> bool:
        text = ref.get("reference")
        return (isinstance(text, str) and "Patient/" in text) or ref.get("type") == "Patient"

    return [ref for f in fields if f in res for ref in _references_before(res[f]) if names_a_patient(ref)]


def _loose_id_before(ref: dict) -> str:
    text = ref.get("reference")
    if not isinstance(text, str) or "Patient/" not in text:
        return subjects.UNRESOLVED
    return text.rsplit("Patient/", 1)[1].split("/", 1)[0]


def _patients_named_before(res: dict) -> set[str]:
    named = {_loose_id_before(ref) for ref in _patient_references_before(res)}
    if res.get("resourceType") == "Patient":
        named.add(res["id"] if isinstance(res.get("id"), str) and res["id"] else subjects.UNRESOLVED)
    return named


def _about_before(res: dict, patient_id: str, base) -> bool:
    """subjects.about before the one-pass rewrite (3fa03da^), the definition the rewrite must keep."""
    wanted = {f"Patient/{patient_id}"} | ({f"{base.url}/Patient/{patient_id}"} if base is not None else set())
    owners = _patient_references_before(res, subjects.OWNER_FIELDS)
    if not owners:
        return False
    return all(ref.get("reference") in wanted for ref in _patient_references_before(res))


_BASE = AllowList.parse("https://fhir.example/r4").check("https://fhir.example/r4")
_REF_TEXT = [
    "Patient/p1", "Patient/p2", "Patient/p1/_history/2", "https://fhir.example/r4/Patient/p1",
    "https://fhir.example/r4/Patient/p2", "https://other.example/fhir/Patient/p1", "Group/g", "Practitioner/x",
    "patient/p1", "Patient/", "", "Patient/p1 ", "#contained", "urn:uuid:1", "Patient/P1", "Medication/m1",
]  # fmt: skip
_hashable = st.one_of(st.sampled_from(_REF_TEXT), st.none(), st.integers(), st.text(max_size=4), st.booleans())
_reference = st.fixed_dictionaries(
    {},
    optional={
        "reference": _hashable,
        "type": st.sampled_from(["Patient", "Practitioner", "patient", None, 3]),
        "identifier": st.just({"system": "urn:x", "value": "1"}),
        "display": st.text(max_size=3),
    },
)
_item = st.one_of(
    _reference,
    st.fixed_dictionaries({"actor": _reference}),
    st.fixed_dictionaries({"actor": st.one_of(st.none(), st.text(max_size=2), st.lists(_reference, max_size=1))}),
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.just([]),
)
_FIELDS = subjects.OWNER_FIELDS + subjects.OTHER_FIELDS
_resource = st.dictionaries(
    st.sampled_from((*_FIELDS, "resourceType", "id", "medicationReference")),
    st.one_of(_item, st.lists(_item, max_size=3)),
    max_size=5,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_resource, st.sampled_from(["p1", "p2", "P1"]), st.booleans())
def test_about_agrees_with_the_previous_definition(res, pid, on_server):
    base = _BASE if on_server else None
    assert subjects.about(res, subjects.wanted_references(pid, base)) is _about_before(res, pid, base)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_resource, max_size=6), st.sampled_from(["p1", "p2"]), st.booleans())
def test_scope_to_patient_keeps_what_the_previous_definition_kept(resources, pid, on_server):
    base = _BASE if on_server else None
    for i, r in enumerate(resources):  # some Patients and Medications, as a hook's searches bring them
        if i % 3 == 1:
            r["resourceType"] = "Patient" if i % 2 else "Medication"
            r["id"] = pid if i % 2 else "m1"
    kept, aside = scope_to_patient(resources, pid, base)
    mine = [r for r in resources if r.get("resourceType") != "Medication"]
    want = [
        r for r in mine if (r.get("resourceType") == "Patient" and r.get("id") == pid) or _about_before(r, pid, base)
    ]
    assert kept[: len(want)] == want
    assert len(kept) + aside == len(resources)


def _owner_before(res: dict) -> tuple[str | None, bool]:
    """subjects.owner before the one-pass rewrite (two walks: patients_named, then the owner fields)."""
    named = _patients_named_before(res)
    if len(named) > 1 or subjects.UNRESOLVED in named:
        return None, len(named) > 1
    owned = res.get("resourceType") == "Patient" or bool(_patient_references_before(res, subjects.OWNER_FIELDS))
    return (next(iter(named)) if named and owned else None), False


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_resource, st.sampled_from(["Patient", "Observation", "Immunization"]), st.sampled_from(["p1", "", 7, None]))
def test_owner_agrees_with_the_previous_definition(res, kind, pid):
    res = {**res, "resourceType": kind} | ({"id": pid} if pid is not None else {})
    assert subjects.owner(res) == _owner_before(res)
    assert subjects.patients_named(res) == _patients_named_before(res)


# A JSON array or object where a patient-typed Reference's `reference` should be a string (a hostile or broken
# export; JSON allows it). The previous definition looked at owner fields first and answered False for a
# resource naming no owner (and raised with one); the one-pass rewrite looked the unhashable value up in a
# frozenset and raised: the hook answered 500. It names nobody we know, so the resource is set aside.
_NO_OWNER = {"resourceType": "Condition", "id": "junk", "code": {"text": "x"},
             "asserter": {"type": "Patient", "reference": ["Patient/p1"]}}  # fmt: skip


def test_the_previous_definition_set_such_a_resource_aside():
    assert _about_before(_NO_OWNER, "p1", None) is False


def test_an_unhashable_reference_outside_the_owner_fields_is_set_aside():
    assert subjects.about(_NO_OWNER, subjects.wanted_references("p1", None)) is False
    assert scope_to_patient([_NO_OWNER], "p1", None) == ([], 1)


@pytest.mark.parametrize("owner", [False, True])
def test_a_hook_sets_aside_a_prefetched_resource_with_an_unhashable_patient_reference(tmp_path, owner):
    from helpers import open_service

    from demo.hook_request import hook_request
    from demo.load import demo_bundles

    pid = next(iter(demo_bundles()))
    req = hook_request(pid)
    key, bundle = next((k, v) for k, v in req["prefetch"].items() if isinstance(v, dict) and v.get("entry"))
    junk = {**copy.deepcopy(bundle["entry"][0]["resource"]), "id": "junk"}
    for owner_field in subjects.OWNER_FIELDS:
        junk.pop(owner_field, None)
    junk["asserter" if junk["resourceType"] == "Condition" else "performer"] = {
        "type": "Patient",
        "reference": [f"Patient/{pid}"],
    }
    if owner:
        junk["subject" if junk["resourceType"] != "Immunization" else "patient"] = {"reference": f"Patient/{pid}"}
    bundle["entry"].append({"resource": junk, "search": {"mode": "match"}})
    with open_service(tmp_path) as c:
        response = c.post("/cds-services/trial-matcher", json=req)
    assert response.status_code == 200, (key, response.text)


# --- 5. rules compiled to closures ----------------------------------------------------------------------------


def _all_before(rs: list[Res]) -> Res:
    false = [r for r in rs if r.truth is Truth.FALSE]
    if false:
        return Res(Truth.FALSE, max_until(false)).merge(false)
    truths = {r.truth for r in rs}
    for t in (Truth.UNKNOWN, Truth.REVIEW):
        if t in truths:
            return Res(t).merge([r for r in rs if r.truth is not Truth.TRUE])
    return Res(Truth.TRUE, min_until(rs)).merge(rs)


def _any_before(rs: list[Res]) -> Res:
    true = [r for r in rs if r.truth is Truth.TRUE]
    if true:
        return Res(Truth.TRUE, max_until(true)).merge(true)
    truths = {r.truth for r in rs}
    for t in (Truth.UNKNOWN, Truth.REVIEW):
        if t in truths:
            return Res(t).merge([r for r in rs if r.truth is not Truth.FALSE])
    return Res(Truth.FALSE, min_until(rs)).merge(rs)


_FLIP = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}


def _walk(rule, ctx: Ctx) -> Res:
    """The tree-walking evaluator before 01ba82a (Engine.rule and its combinators)."""
    if isinstance(rule, All):
        return _all_before([_walk(x, ctx) for x in rule.items])
    if isinstance(rule, AnyOf):
        return _any_before([_walk(x, ctx) for x in rule.items])
    if isinstance(rule, AnyAvailable):
        rs = [_walk(x, ctx) for x in rule.items]
        return _any_before([r for r in rs if r.truth is not Truth.UNKNOWN] or rs)
    if isinstance(rule, ReviewLeaf):
        return Res(Truth.REVIEW, notes=[rule.reason], standing=[rule.reason])
    if isinstance(rule, Not):
        r = _walk(rule.item, ctx.flipped())
        return Res(_FLIP.get(r.truth, r.truth), r.until, r.evidence, r.missing, r.notes, r.why, r.standing)
    if isinstance(rule, NoneOnRecord):
        r = _walk(rule.item, ctx)
        if r.truth is Truth.UNKNOWN and _walk(rule.item, ctx.absence_readable()).truth is Truth.FALSE:
            return Res(Truth.REVIEW, notes=[rule.reason])
        return r
    if isinstance(rule, Implies):
        return _any_before([_walk(Not("not", rule.condition), ctx), _walk(rule.then, ctx)])
    return LEAVES[rule.kind].evaluate(rule, ctx)


def _outcome_before(c, rule, ctx: Ctx) -> CriterionResult:
    """Engine.criterion before 01ba82a and 174ab11 (outcome by equality, every list deduplicated)."""
    if rule is None:
        return CriterionResult(id=c.id, type=c.type, text=c.text, outcome="review", until=None, explanation=None,
                               evidence=[], missing=[], review=[c.review or "needs a person"])  # fmt: skip
    r = _walk(rule, ctx)
    holds, fails_when = (Truth.TRUE, Truth.FALSE) if c.type == "inclusion" else (Truth.FALSE, Truth.TRUE)
    until = None
    if r.truth == holds:
        outcome = "pass"
    elif r.truth == fails_when:
        outcome, until = "fail", r.until
    elif r.truth == Truth.UNKNOWN:
        outcome = "unknown"
    else:
        outcome = "review"
    review = list(dict.fromkeys(r.notes)) if outcome in ("review", "unknown") else []
    flagged = outcome == "review" and r.doubt
    if outcome == "pass" and c.also_review:
        outcome = "review"
        review.append(c.also_review)
    elif c.also_review and outcome == "review":
        review.append(c.also_review)
    return CriterionResult(id=c.id, type=c.type, text=c.text, outcome=outcome, until=until,
                           explanation="; ".join(dict.fromkeys(r.why)) or None,
                           evidence=dedupe_evidence(r.evidence), missing=list(dict.fromkeys(r.missing)),
                           review=review, flagged=flagged)  # fmt: skip


def _patients(as_of: date, n: int) -> list[tuple[str, list[dict], set[str] | None, date]]:
    """Bench patients of several sizes and the all-in-range patient with resources dropped, values scaled,
    other sexes and ages, sources left unread and other dates."""
    out = []
    for i in range(n):
        rng = random.Random(i)
        pid = f"g{i}"
        day = as_of + timedelta(days=rng.randint(-400, 400))
        if i % 4 == 0:
            res = make_patient(rng.randint(5, 150), pid, day)
        else:
            birth = str(date(rng.randint(1935, 2012), rng.randint(1, 12), 15))
            res = [copy.deepcopy(r) for r in syn.eligible_patient(day, pid, birth, rng.choice(["female", "male"]))]
            res = [r for r in res if r["resourceType"] == "Patient" or rng.random() > 0.3]
            for r in res:
                q = r.get("valueQuantity")
                if q and rng.random() < 0.4:
                    q["value"] = round(q["value"] * rng.choice([0.1, 0.5, 1.5, 4]), 3)
            if rng.random() < 0.5:
                res += [r for r in make_patient(rng.randint(5, 60), pid, day) if r["resourceType"] != "Patient"]
        gathered = None if rng.random() < 0.5 else set(rng.sample(sorted(SOURCES), rng.randint(0, len(SOURCES))))
        out.append((pid, res, gathered, day))
    return out


def test_compiled_rules_give_what_the_tree_walk_gave_for_every_criterion(catalog, as_of):
    seen: set[str] = set()
    for pid, res, gathered, day in _patients(as_of, 60):
        facts = catalog.facts(res, pid, gathered)
        for trial in catalog.chosen():
            for (c, run), (c2, rule) in zip(catalog.engine.plan(trial), trial.plan, strict=True):
                assert c is c2
                ctx = Ctx(facts, day, catalog.mappings, c.type == "exclusion", False, Memo(facts, day))
                before = Ctx(facts, day, catalog.mappings, c.type == "exclusion", False, Memo(facts, day))
                got = catalog.engine.outcome(c, run, ctx)
                assert got == _outcome_before(c, rule, before), (pid, trial.id, c.id)
                if rule is not None:
                    fresh = compile_rule(rule)(Ctx(facts, day, catalog.mappings, c.type == "exclusion", True,
                                                   Memo(facts, day)))  # fmt: skip
                    walked = _walk(rule, Ctx(facts, day, catalog.mappings, c.type == "exclusion", True,
                                             Memo(facts, day)))  # fmt: skip
                    assert res_content(fresh) == res_content(walked), (pid, trial.id, c.id)
                seen.add(got.outcome)
    assert seen == {"pass", "fail", "unknown", "review"}  # the patients reach every outcome


def test_a_trials_plan_is_compiled_once_and_follows_the_trial(catalog, as_of):
    trial = catalog.chosen()[0]
    plan = catalog.engine.plan(trial)
    assert catalog.engine.plan(trial) is plan
    assert [c for c, _ in plan] == [c for c, _ in trial.plan]
    assert [run is None for _, run in plan] == [rule is None for _, rule in trial.plan]
    other = trial.model_copy()
    assert catalog.engine.plan(other) is not plan


def _same(got: CriterionResult, alone: CriterionResult) -> None:
    """A criterion in a whole report against the same criterion evaluated on its own; the report only adds
    to the explanation of a fail that lifts beyond the horizon."""
    assert got.model_dump(exclude={"explanation"}) == alone.model_dump(exclude={"explanation"}), got.id
    assert (got.explanation or "").startswith(alone.explanation or ""), got.id


def test_a_verdict_is_the_report_without_its_explanations(catalog, as_of):
    """Catalog.verdicts (the screen's evaluation) decides what Catalog.report does, trial by trial: status,
    the date a bar lifts, the cohort entry and every criterion's outcome, for generated patients of every
    shape, on other dates, with sources unread, and for a deceased patient."""
    seen = set()
    whole = ("e0", syn.eligible_patient(as_of, "e0"), None, as_of)  # the all-in-range patient, untouched
    washout = syn.med_statement("e1", "121191", "riTUXimab 10 MG/ML", as_of - timedelta(days=75),
                                as_of - timedelta(days=45), status="completed")  # fmt: skip
    barred = ("e1", [*syn.eligible_patient(as_of, "e1"), washout], None, as_of)  # a bar that lifts
    for pid, res, gathered, day in [whole, barred, *_patients(as_of, 60)]:
        for record in (res, [{**r, "deceasedBoolean": True} if r["resourceType"] == "Patient" else r for r in res]):
            facts = catalog.facts(record, pid, gathered)
            report, verdicts = catalog.report(facts, day).trials, catalog.verdicts(facts, day)
            assert [screen_kept(v) for v in verdicts] == [screen_kept(r) for r in report], pid
            seen |= {(r.status, r.eligible_from is not None) for r in report}
    assert {s for s, _ in seen} >= {"likely-eligible", "possibly-eligible", "ineligible"}
    assert ("possibly-eligible", True) in seen  # a bar that lifts


def test_a_leaf_shared_by_criteria_and_trials_gives_each_what_it_gives_alone(catalog, as_of):
    """Engine.plan numbers equal leaves and a patient's memo keeps each one's result by number and by the
    way absence cuts: a whole report, every trial sharing one memo, must give every criterion what it gives
    evaluated alone (Engine.criterion: compiled afresh, unnumbered, its own memo)."""
    for pid, res, gathered, day in _patients(as_of, 60):
        facts = catalog.facts(res, pid, gathered)
        report = catalog.report(facts, day)
        for trial, result in zip(catalog.chosen(), report.trials, strict=True):
            assert result.id == trial.id
            for got in result.criteria:
                c = next(c for c in trial.criteria if c.id == got.id)
                _same(got, catalog.engine.criterion(facts, c, day))


def test_a_memo_of_another_engine_or_patient_is_not_read(catalog, as_of):
    """Leaf results are kept under one engine's numbers: a memo filled by another engine, or for another
    patient or date, is set aside rather than read."""
    from cds_service.eligibility.engine import Engine

    pid, res, gathered, day = next(p for p in _patients(as_of, 12) if p[2] is None)
    facts = catalog.facts(res, pid, gathered)
    other_patient = catalog.facts(make_patient(40, "other", day), "other")
    trial = catalog.chosen()[0]
    alone = catalog.engine.evaluate(facts, trial, day)
    stranger = Engine(catalog.mappings)
    for memo in (Memo(facts, day, engine=stranger), Memo(other_patient, day, engine=catalog.engine),
                 Memo(facts, day + timedelta(days=400), engine=catalog.engine)):  # fmt: skip
        for t in reversed(catalog.chosen()):  # fill it as another evaluation would (the stranger numbers
            # the leaves in another order)
            (stranger if memo.engine is stranger else catalog.engine).evaluate(memo.facts, t, memo.as_of, memo)
        assert memo.leaves
        assert catalog.engine.evaluate(facts, trial, day, memo) == alone


def test_a_leaf_asked_both_ways_round_is_kept_apart(catalog, as_of):
    """The same leaf under `not` and outside it, in an inclusion and an exclusion: absence reads differently
    each way, so the memo must keep four results apart. A record with no condition read completely."""
    leaves = [r for t in catalog.chosen() for _, r in t.plan if type(r).__name__ == "ConditionRule"]
    patient = next(r for r in make_patient(40, "x", as_of) if r["resourceType"] == "Patient")
    facts = catalog.facts([patient], "x")
    for leaf in leaves[:10]:
        for rule in (AnyOf("any", (leaf, Not("not", leaf))), All("all", (Not("not", leaf), leaf))):
            for exclusion in (False, True):
                memo = Memo(facts, as_of)
                kept = compile_rule(rule, {})(Ctx(facts, as_of, catalog.mappings, exclusion, False, memo))
                alone = compile_rule(rule)(Ctx(facts, as_of, catalog.mappings, exclusion, False, Memo(facts, as_of)))
                assert kept == alone, (leaf, exclusion)
                assert len(memo.leaves) == 2


def test_a_leaf_that_cannot_be_numbered_is_evaluated_each_time(catalog, as_of, monkeypatch):
    """A leaf kind holding a list cannot be hashed: compiled unnumbered, never kept in the memo."""
    rule = next(r for t in catalog.chosen() for _, r in t.plan if r is not None and type(r).__name__ == "Lab")
    calls = []
    kind = LEAVES[rule.kind]

    def evaluate(r: object, ctx: Ctx) -> Res:
        calls.append(r)
        return kind.evaluate(rule, ctx)

    monkeypatch.setitem(LEAVES, rule.kind, SimpleNamespace(evaluate=evaluate))
    unhashable = SimpleNamespace(kind=rule.kind)  # a namespace has no hash
    run = compile_rule(unhashable, {})  # type: ignore[arg-type]
    facts = catalog.facts(make_patient(40, "x", as_of), "x")
    ctx = Ctx(facts, as_of, catalog.mappings, False, False, Memo(facts, as_of))
    assert run(ctx) == run(ctx) == compile_rule(rule)(ctx)
    assert calls.count(unhashable) == 2 and not ctx.memo.leaves


# --- prefilter.CohortFilter.inside_lines: one scan for every inside patient ------------------------------------


def _inside_lines_before(inside: set[bytes], buf: bytes) -> list[tuple[int, int]]:
    """inside_lines before the one-scan rewrite: a find of `Patient/<id>` per inside patient the block names."""
    spans = set()
    for pid in inside & set(prefilter._PATIENT_REF.findall(buf)):
        needle = b"Patient/" + pid
        at = buf.find(needle)
        while at >= 0:
            end = at + len(needle)
            if buf[end : end + 1] in (b"/", b'"'):
                spans.add((buf.rfind(b"\n", 0, at) + 1, buf.find(b"\n", end) + 1))
            at = buf.find(needle, end)
    return sorted(spans)


# ids that are prefixes of one another, regular-expression syntax, an empty one; references as they are written
_REF_IDS = st.sampled_from([b"p", b"p1", b"p10", b"1", b"p.1", b"p|1", b"(p)", b"p*", b"[p]", b"", b"Patient", b"x?"])
_REF = st.tuples(st.sampled_from([b"Patient/", b"Patient/Patient/", b"x/Patient/"]), _REF_IDS,
                 st.sampled_from([b'"', b"/_history/2\"", b"/", b"a\"", b" "])).map(b"".join)  # fmt: skip
_LINE = st.lists(st.one_of(_REF, st.sampled_from([b'{"a":', b"Patient", b",", b"9"])), min_size=1, max_size=5)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_LINE.map(b"".join), min_size=1, max_size=8), st.sets(_REF_IDS, max_size=6))
def test_lines_of_inside_patients_agree_with_the_previous_definition(lines, inside):
    buf = b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)
    hits = inside & set(prefilter._PATIENT_REF.findall(buf))
    assert prefilter.lines_naming(buf, hits) == _inside_lines_before(inside, buf)
    got = prefilter.CohortFilter(lambda *_: False, inside).inside_lines(buf)
    assert got is None or got == _inside_lines_before(inside, buf)  # None: each line is looked at instead
