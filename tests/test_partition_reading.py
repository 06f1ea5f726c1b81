"""How a screen's worker reads a partition. Medication resources no patient owns (a Bulk Data export's Medication
file) are indexed once per partition (Normalizer.shared_medications) instead of being added to every record: a
record read with them `shared` gives the facts of the record followed by them, in both reading modes, and a
screen hands the normaliser each patient's own resources only. The collector is paused while a partition is
read and evaluated, and runs once after. Nothing here names a trial."""

from __future__ import annotations

import copy
import random
from datetime import date

import orjson
import pytest

from cds_service.fhir.facts import SOURCES
from cds_service.fhir.normalize import Normalizer
from cds_service.screening import run
from cds_service.screening.bulk import ReadLimits
from cds_service.screening.funnel import row
from cds_service.settings import REPO_ROOT
from demo import synthetic as syn

KINDS = set(SOURCES)


def _medication(mid: str, request: dict) -> dict:
    """A Medication holding the request's drug concept."""
    return {"resourceType": "Medication", "id": mid, "code": copy.deepcopy(request["medicationCodeableConcept"])}


def _record(as_of: date, pid: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(the patient's own resources, the shared Medications): some medication records refer to a shared
    Medication, one to a Medication nowhere (unresolvable), one to a contained one; a few shared Medications
    are invalid (a number for a code's text: strict mode sets them aside); one of the patient's own
    Medications has the id of a shared one with another drug."""
    own = syn.eligible_patient(as_of, pid)
    own.append(syn.med_request(pid, "20610", "cyclophosphamide", syn.days_ago(as_of, 40), status="active"))
    shared: list[dict] = []
    meds = [r for r in own if r["resourceType"].startswith("Medication") and "medicationCodeableConcept" in r]
    for i, r in enumerate(meds):
        how = rng.choice(["shared", "shared", "missing", "contained", "kept"])
        if how == "kept":
            continue
        mid = f"m-{pid}-{i}"
        if how == "shared":
            shared.append(_medication(mid, r))
        elif how == "contained":
            r["contained"] = [_medication(mid, r)]
            mid = f"#{mid}"
        r["medicationReference"] = {"reference": mid if mid.startswith("#") else f"Medication/{mid}"}
        del r["medicationCodeableConcept"]
    for i in range(rng.randint(1, 3)):  # invalid in strict mode: a code's text must be a string
        shared.append({"resourceType": "Medication", "id": f"bad-{pid}-{i}", "code": {"text": 12}})
    if shared:
        clash = copy.deepcopy(shared[0])
        clash["code"] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "5640"}]}
        own.append(clash)  # the shared one is read, as when it followed the record
    rng.shuffle(own)
    rng.shuffle(shared)
    return own, shared


@pytest.mark.parametrize("strict", [False, True])
def test_shared_medications_read_as_the_record_followed_by_them(catalog, as_of, strict):
    normalizer = Normalizer(catalog.mappings, strict)
    rng = random.Random(7)
    resolved = 0
    for k in range(40):
        own, shared = _record(as_of, f"s{k}", rng)
        others = [r for r in own if r["resourceType"] != "Medication"]
        index = normalizer.shared_medications(others + shared)  # resources of other types are left out
        got = normalizer.normalize(own, f"s{k}", KINDS, index)
        assert got == normalizer.normalize(own + shared, f"s{k}", KINDS), k
        resolved += len(got.medications)
        if strict:
            assert any("Medication/bad-" in s for s in got.skipped)
    assert resolved > 40


def test_a_screen_gives_the_normaliser_each_patients_own_resources(tmp_path, catalog, as_of, monkeypatch):
    """A partition's shared Medications reach the normaliser once, indexed, not inside every record, and the
    rows are those of each record read with them appended."""
    rng = random.Random(3)
    records = [_record(as_of, f"q{k}", rng) for k in range(12)]
    shared = [m for _, meds in records for m in meds]
    part = tmp_path / "part-0.ndjson"
    with part.open("wb") as f:
        for pid, (own, _) in zip((f"q{k}" for k in range(12)), records, strict=True):
            for r in own:
                owner = "null" if r["resourceType"] == "Medication" else orjson.dumps(pid).decode()
                f.write(owner.encode() + b"\t" + orjson.dumps(r) + b"\n")
        for m in shared:
            f.write(b"null\t" + orjson.dumps(m) + b"\n")
    run._init(str(REPO_ROOT / "mappings"), str(REPO_ROOT / "trials"), 365)
    handed: list[list[dict]] = []
    normalize = run._CATALOG.normalizer.normalize  # type: ignore[union-attr]

    def spy(resources, patient_id=None, gathered=(), shared=None):  # noqa: ANN001, ANN202
        handed.append(list(resources))
        return normalize(resources, patient_id, gathered, shared)

    monkeypatch.setattr(run._CATALOG.normalizer, "normalize", spy)  # type: ignore[union-attr]
    rows, _, _, _ = run.screen_partition(([part], as_of, None, ReadLimits(), None))
    monkeypatch.undo()
    assert handed and not any(r["resourceType"] == "Medication" for rs in handed for r in rs)
    every_med = [r for own, _ in records for r in own if r["resourceType"] == "Medication"] + shared
    want = []
    for k, (own, _) in enumerate(records):
        whole = [r for r in own if r["resourceType"] != "Medication"] + every_med
        want += [row(f"q{k}", v) for v in catalog.verdicts(catalog.facts(whole, f"q{k}"), as_of)]
    assert sorted(rows, key=lambda r: (r["patient"], r["trial"])) == sorted(
        want, key=lambda r: (r["patient"], r["trial"])
    )


def test_a_partition_is_read_with_the_collector_paused_and_collected_after(tmp_path, as_of, monkeypatch):
    """screen_partition pauses the collector while it reads and evaluates (runtime.collector_paused), leaves it
    as it found it, and a reference cycle made meanwhile is freed by the end."""
    import gc
    import weakref

    part = tmp_path / "part-0.ndjson"
    own, _ = _record(as_of, "g1", random.Random(1))
    part.write_bytes(b"".join(b'"g1"\t' + orjson.dumps(r) + b"\n" for r in own if r["resourceType"] != "Medication"))
    run._init(str(REPO_ROOT / "mappings"), str(REPO_ROOT / "trials"), 365)
    seen: list = []
    evaluate = run.evaluate_patients

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector frees
        seen.append((gc.isenabled(), weakref.ref(a)))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(run, "evaluate_patients", spy)
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            rows, *_ = run.screen_partition(([part], as_of, None, ReadLimits(), None))
            assert gc.isenabled() == enabled and rows
        finally:
            gc.enable()
    assert [paused for paused, _ in seen] == [False, False]
    assert seen[0][1]() is None  # collected when the partition was done
