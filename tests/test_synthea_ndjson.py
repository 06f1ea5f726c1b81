"""demo/synthea.py's Bulk Data form: Synthea's urn:uuid references become Type/id, one file per type."""

from __future__ import annotations

import orjson

from cds_service.screening.bulk import export_files, patient_of
from demo.synthea import patient_bundles, write_ndjson


def test_transaction_bundles_become_ndjson_with_relative_references(tmp_path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    entries = [
        {"fullUrl": "urn:uuid:p-1", "resource": {"resourceType": "Patient", "id": "p-1"}},
        {
            "fullUrl": "urn:uuid:c-1",
            "resource": {
                "resourceType": "Condition",
                "id": "c-1",
                "subject": {"reference": "urn:uuid:p-1"},
                "evidence": [{"detail": [{"reference": "urn:uuid:o-1"}]}],
            },
        },
        {
            "fullUrl": "urn:uuid:o-1",
            "resource": {
                "resourceType": "Observation",
                "id": "o-1",
                "subject": {"reference": "urn:uuid:p-1"},
                "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1"}],
            },
        },
    ]
    (bundles / "Ann_Smith_p-1.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "entry": entries}))
    (bundles / "hospitalInformation1.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "entry": []}))
    assert [p.name for p in patient_bundles(bundles)] == ["Ann_Smith_p-1.json"]
    write_ndjson(patient_bundles(bundles), tmp_path / "ndjson")
    files = dict(export_files(tmp_path / "ndjson"))
    assert set(files) == {"Patient", "Condition", "Observation"}
    condition = orjson.loads(files["Condition"].read_bytes())
    assert condition["subject"] == {"reference": "Patient/p-1"} and patient_of(condition) == "p-1"
    assert condition["evidence"][0]["detail"][0]["reference"] == "Observation/o-1"
    observation = orjson.loads(files["Observation"].read_bytes())
    assert observation["performer"][0]["reference"].startswith("Practitioner?identifier=")  # left as Synthea wrote it
