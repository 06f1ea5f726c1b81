"""The README's configuration table and the settings agree: every setting is documented, every documented
variable is a setting, and each plain default is the one the code uses (hospital IT configures from it)."""

from __future__ import annotations

import re
from pathlib import Path

from cds_service.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| (`TRIAL_MATCHER_[A-Z_]+`(?:, `TRIAL_MATCHER_[A-Z_]+`)*) \| ([^|]*) \|", re.M)


def _table() -> dict[str, str]:
    """Variable -> its documented default cell, from the Configuration section."""
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for names, default in ROW.findall(section):
        variables = re.findall(r"TRIAL_MATCHER_([A-Z_]+)", names)
        defaults = [d.strip() for d in default.split(",")] if len(variables) > 1 else [default.strip()]
        for var, d in zip(variables, defaults if len(defaults) == len(variables) else [default] * len(variables),
                          strict=True):  # fmt: skip
            out[var.lower()] = d
    return out


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting():
    documented, fields = set(_table()), set(Settings.model_fields)
    assert fields - documented == set(), "settings missing from the README's table"
    assert documented - fields == set(), "README variables that are no setting"


def test_each_plain_default_is_the_codes():
    for name, cell in _table().items():
        literal = re.fullmatch(r"`([^`]*)`(?: \(.*\))?", cell)
        default = Settings.model_fields[name].default
        if literal is None or not isinstance(default, (bool, int, float, str)):
            continue  # "–", "today", a sentence: said in words
        text = literal.group(1)
        if isinstance(default, bool):
            assert text == str(default).lower(), (name, cell, default)
        elif isinstance(default, (int, float)):
            assert float(text) == default, (name, cell, default)
        else:
            assert text == default, (name, cell, default)
