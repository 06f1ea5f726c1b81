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
