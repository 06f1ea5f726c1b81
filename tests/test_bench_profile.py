"""bench/profile.md is the history of the patient profile, newest first: a run adds its profile above the
earlier ones (an earlier run of the tool replaced the file, and the history was kept only by hand)."""

from __future__ import annotations

from bench.profile import write_first


def test_a_profile_is_written_above_the_earlier_ones(tmp_path):
    out = tmp_path / "profile.md"
    write_first(out, "# first\n")
    write_first(out, "# second\n")
    assert out.read_text(encoding="utf-8") == "# second\n\n# first\n"


def test_replace_writes_the_profile_alone(tmp_path):
    out = tmp_path / "profile.md"
    write_first(out, "# first\n")
    write_first(out, "# second\n", replace=True)
    assert out.read_text(encoding="utf-8") == "# second\n"


def test_a_screens_stages_are_measured_on_the_chosen_patients_whole_records(tmp_path):
    """`--export`: the first patients of the Patient file, with every line of theirs and no other patient's."""
    import orjson

    from bench.profile import SCREEN_LABELS, export_lines, screen_profile
    from bench.screen import write_export
    from cds_service.fhir.subjects import owner

    total = write_export(tmp_path, patients=4, size=40)
    medication = {"resourceType": "Medication", "id": "m1", "code": {"text": "hydroxychloroquine"}}
    (tmp_path / "Medication.ndjson").write_bytes(orjson.dumps(medication) + b"\n")  # every patient's to name
    chosen = [orjson.loads(line)["id"] for line in (tmp_path / "Patient.ndjson").read_bytes().splitlines()[:2]]
    lines = [orjson.loads(line) for line in export_lines(tmp_path, 2)]
    assert medication in lines
    owned = [r for r in lines if r["resourceType"] != "Medication"]
    assert {owner(r)[0] for r in owned} == set(chosen)
    every = [line for path in tmp_path.glob("*.ndjson") for line in path.read_bytes().splitlines()]
    assert len(every) == total + 1
    assert sum(owner(orjson.loads(line))[0] in chosen for line in every) == len(owned)

    text = screen_profile(tmp_path, 2)
    for label in SCREEN_LABELS.values():
        row = next(r for r in text.splitlines() if r.startswith(f"| {label} |"))
        assert float(row.split("|")[2]) >= 0 and float(row.split("|")[3]) >= 0, row
