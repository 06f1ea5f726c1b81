"""Equal answers whatever the order of the record: the engine, the screen's cohort-first path and the hook
give the same verdicts for a record shuffled and with resources sent twice (real records repeat them)."""

from __future__ import annotations

import copy
import json
import random
import uuid

import pytest
from helpers import ext, open_service

from cds_service.screening.bulk import COUNTS
from cds_service.screening.run import cohort_first, screen
from cds_service.settings import REPO_ROOT
from demo.hook_request import prefetch_for
from demo.load import demo_bundles, resources


def verdicts(trials) -> dict[str, tuple]:
    return {t.id: (t.status, t.eligible_from, tuple((c.id, c.outcome) for c in t.criteria)) for t in trials}


def scrambled(res: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = copy.deepcopy(res)
    out += [copy.deepcopy(r) for r in rng.sample(out, k=max(1, len(out) // 4)) if r["resourceType"] != "Patient"]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_and_duplicated_records_get_the_same_verdicts(catalog, as_of, seed, tmp_path):
    bundles = demo_bundles(as_of)
    with open_service(tmp_path, as_of=as_of) as client:
        for pid, bundle in bundles.items():
            res = resources(bundle)
            want = verdicts(catalog.report(catalog.facts(res, pid), as_of).trials)
            mixed = scrambled(res, seed)
            assert verdicts(catalog.report(catalog.facts(mixed, pid), as_of).trials) == want, pid
            assert verdicts(cohort_first(catalog, pid, mixed, as_of, None)) == want, pid
            hook = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": pid},
                    "prefetch": prefetch_for(mixed, pid)}  # fmt: skip
            cards = client.post("/cds-services/trial-matcher", json=hook).json()["cards"]
            shown = {(ext(c)["trialId"], ext(c)["status"]) for c in cards}
            expected = {(t, v[0]) for t, v in want.items() if v[0] in ("likely-eligible", "possibly-eligible")}
            assert shown == expected, pid


def _line(r: dict, rng: random.Random) -> str:
    """One resource as exporters write it: compact or spaced, slashes escaped, non-ASCII as \\u escapes."""
    text = json.dumps(r, separators=rng.choice([(",", ":"), (", ", ": ")]), ensure_ascii=rng.random() < 0.3)
    return text.replace("/", "\\/") if rng.random() < 0.2 else text


# who routes the spans: this process until a worker is up (as it runs), the workers alone, this process
# alone, or this process the first half of each phase's spans
ROUTERS = {
    "race": None,
    "workers": lambda spans, ready, take: spans,
    "here": lambda spans, ready, take: [take(s) for s in spans] and [],
    "half": lambda spans, ready, take: [take(s) for s in spans[: len(spans) // 2]] and spans[len(spans) // 2 :],
}


@pytest.mark.parametrize(
    ("seed", "workers", "span", "first", "who"),
    [(0, 1, None, "mixed", "race"), (1, 1, 4096, "Condition", "workers"), (2, 2, 4096, "Patient", "half"),
     (3, 2, None, "mixed", "here"), (4, 2, 2048, "mixed", "workers"), (5, 2, 2048, "Condition", "here")],
)  # fmt: skip
def test_a_shuffled_mixed_export_screens_as_each_record_evaluated_whole(
    catalog, as_of, seed, workers, span, first, who, tmp_path, monkeypatch
):
    """The screen reads only the lines of patients inside some cohort (prefilter.py). Whatever the order
    (a patient's Observations before the Condition that brings them inside), the file names, the JSON
    spelling and the repeats, its rows are the verdicts of each whole record. Also when the files are cut
    into spans routed by several workers, each learning of patients inside from the Conditions in its own
    spans only (`span`: bytes per span, cutting lines anywhere), and when the first file, of mixed types,
    is named for a type the cohort entry reads; whoever routes the spans (`who`: the screen process takes
    them while the workers start)."""
    rng = random.Random(seed)
    records = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    for pid, res in list(records.items())[:2]:  # the same records without their SLE: outside every cohort
        out = f"{pid}-clinic"
        records[out] = [
            {**r, "subject": {"reference": f"Patient/{out}"}, "id": f"{r.get('id')}-c"}
            if r["resourceType"] != "Patient" else {**r, "id": out}
            for r in res
            if r["resourceType"] != "Condition"
        ]  # fmt: skip
    lines = [_line(r, rng) for res in records.values() for r in scrambled(res, seed)]
    rng.shuffle(lines)
    export = tmp_path / "export"
    export.mkdir()
    for i, name in enumerate((first, "more", "rest")):  # every file mixes types
        (export / f"{name}.ndjson").write_text("\n".join(lines[i::3]) + "\n")
    dirs = (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365)
    whole = screen(export, dirs, as_of, workers=1) if span else None  # each file one span, one router
    if span:
        monkeypatch.setattr("cds_service.screening.spans.SPAN_BYTES", span)
        monkeypatch.setattr("cds_service.screening.run.ENTRY_SPAN_BYTES", span)
    if ROUTERS[who] is not None:
        monkeypatch.setattr("cds_service.screening.run.until_ready", ROUTERS[who])
    got = screen(export, dirs, as_of, workers=workers)
    if whole is not None:  # the same lines read, parsed and left unparsed
        assert [getattr(got.stats, f) for f in COUNTS] == [getattr(whole.stats, f) for f in COUNTS]
    want = {
        (pid, t.id): (t.status, t.eligible_from.isoformat() if t.eligible_from else "")
        for pid, res in records.items()
        for t in catalog.report(catalog.facts(res, pid), as_of).trials
    }
    assert {(r["patient"], r["trial"]): (r["status"], r["eligible_from"]) for r in got.rows} == want
    assert got.stats.outside_cohort > 0  # the clinic records' lines were skipped, not parsed
    assert got.stats.lines == len(lines)  # every line counted once, whether parsed or skipped in a block


def test_lines_routed_unparsed_are_counted_as_the_full_read_counts_them(as_of, tmp_path):
    """The partition step sends a line whose bytes name one patient inside to that patient's partition
    unparsed; the worker finds its owner. Set-aside lines of patients inside (no owner field, a second
    patient by identifier only, a type no criterion reads) must be counted as a full read counts them."""
    from cds_service.screening.route import partition

    pid, bundle = next(iter(demo_bundles(as_of).items()))
    ref = {"reference": f"Patient/{pid}"}
    odd = [
        {"resourceType": "Observation", "id": "perf-only", "performer": [ref], "status": "final"},
        {"resourceType": "Observation", "id": "two", "subject": ref,
         "performer": [{"type": "Patient", "identifier": {"value": "x"}}]},
        {"resourceType": "Encounter", "id": "enc", "subject": ref},
    ]  # fmt: skip
    export = tmp_path / "export"
    export.mkdir()
    (export / "Mixed.ndjson").write_text("\n".join(json.dumps(r) for r in [*resources(bundle), *odd]) + "\n")
    got = screen(export, (REPO_ROOT / "mappings", REPO_ROOT / "trials", 365), as_of, workers=1).stats
    full = partition(export, tmp_path, 2)[1]
    fields = ("lines", "resources", "malformed", "no_patient", "other_types", "two_patients")
    assert [getattr(got, f) for f in fields] == [getattr(full, f) for f in fields]
    assert (got.no_patient, got.two_patients, got.other_types) == (1, 1, 1)


def test_one_memo_for_all_trials_gives_what_each_trial_alone_gives(catalog, as_of):
    """Catalog.report works out each window and each lab's newest usable result once for every criterion of
    every trial (logic.Memo). Each trial evaluated on its own, with nothing shared, gives the same results,
    for the demo records and for long synthetic ones (years of labs), today and a year on."""
    from datetime import timedelta

    from bench.patients import make_patient

    records = {pid: resources(b) for pid, b in demo_bundles(as_of).items()}
    records |= {f"bench{i}": make_patient(200, f"bench{i}", as_of) for i in range(3)}
    for day in (as_of, as_of + timedelta(days=365)):
        for pid, res in records.items():
            facts = catalog.facts(res, pid)
            shared = catalog.report(facts, day).trials
            alone = [catalog.engine.evaluate(facts, t, day) for t in catalog.trials.values() if not t.draft]
            assert [t.model_dump() for t in shared if t.status != "draft"] == [t.model_dump() for t in alone], pid


def test_the_memo_keeps_each_window_and_each_test_apart(catalog, as_of):
    """One lab asked with two recency windows, and for a value and for a positive, within one patient's
    evaluation: each question keeps its own answer (a memo keyed too coarsely would hand the first answer on)."""
    from datetime import timedelta

    from cds_service.eligibility.lab_results import current, has_positive, has_value
    from cds_service.eligibility.logic import Ctx, Memo
    from cds_service.eligibility.rules import Window
    from demo import synthetic as syn

    old = as_of - timedelta(days=45)  # outside hemoglobin's 30-day recency, inside 60 days
    facts = catalog.facts([syn.patient("w1"), syn.quantity("w1", "718-7", 12.5, "g/dL", old)], "w1")
    ctx = Ctx(facts, as_of, catalog.mappings, False, False, Memo(facts, as_of))
    assert current("hemoglobin", None, ctx, has_value)[0] is None  # the variable's own 30 days
    assert current("hemoglobin", Window(60, "day"), ctx, has_value)[0].value == 125.0
    assert current("hemoglobin", None, ctx, has_value)[0] is None  # asked again: still its own answer
    assert current("hemoglobin", Window(60, "day"), ctx, has_positive)[0] is None  # a number, not a positive
