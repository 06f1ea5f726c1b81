"""What a medication rule says when uses on record do not qualify: the uses, named with their evidence, never
"none on record" (a clinician reads the explanation beside a chart that shows them)."""

from __future__ import annotations

from datetime import date

from helpers import criterion

from demo.load import demo_bundles, resources

AS_OF = date(2026, 11, 23)


def test_a_use_below_the_dose_is_named_with_its_dose_not_denied(catalog):
    """NCT06902844 exc-7.1, glucocorticoids above 20 mg/day within a week, for demo-amara, who takes prednisone
    10 mg/day: it passes, and says so by her prednisone, not by "no systemic glucocorticoids"."""
    record = resources(demo_bundles(AS_OF)["demo-amara"])
    r = criterion(catalog, record, "NCT06902844", "exc-7.1", AS_OF)
    assert r.outcome == "pass", r
    assert "on record qualifies" in (r.explanation or "") and "10 mg/d, not > 20" in (r.explanation or ""), r
    assert any(e.value == 10 and e.resource.startswith("Medication") for e in r.evidence), r.evidence
