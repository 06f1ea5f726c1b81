"""The text lookups of the maps keep their answers (Mappings._memoised): the same answers as reading the text
again, per maps (two catalogues never share them), never for long texts, and never more than MEMO_ENTRIES."""

from __future__ import annotations

import random
import shutil

import pytest

from cds_service.fhir import mappings as mp
from cds_service.fhir.codes import SNOMED
from cds_service.fhir.mappings import load_mappings
from cds_service.settings import REPO_ROOT

TEXTS = ["Systemic lupus erythematosus", "no SLE", "drug-induced lupus", "Hemodialysis (procedure)", "plasma exchange",
         "predniSONE 10 MG Oral Tablet", "no known allergy to penicillin", "cyclophosphamide allergy ruled out",
         "Measles", "", "x" * 300, "Lupus nephritis class IV", "rituximab infusion", "Hypertension"]  # fmt: skip
LOOKUPS = ["condition_text_reading", "text_names_a_group", "ingredient_for_text", "ingredients_in_text"]


def _unkept(m: mp.Mappings, name: str, *args):  # noqa: ANN202
    return getattr(mp.Mappings, name).__wrapped__(m, *args)


@pytest.mark.parametrize("name", LOOKUPS)
def test_kept_answers_are_the_answers_read_again(name):
    m = load_mappings(REPO_ROOT / "mappings")
    rng = random.Random(5)
    texts = [rng.choice(TEXTS) + rng.choice(["", " ", " (disorder)"]) for _ in range(200)]
    for t in texts + texts:
        assert getattr(m, name)(t) == _unkept(m, name, t), t
    assert all(len(k[0]) <= mp.MEMO_KEY_CHARS for k in m._memo[name])


def test_procedure_groups_kept_by_codes_and_text_and_a_list_of_codings_is_read():
    m = load_mappings(REPO_ROOT / "mappings")
    apheresis = ((SNOMED, "127788007"),)
    plain, worded = m.procedure_groups(apheresis, ""), m.procedure_groups(apheresis, "plasma exchange")
    assert plain == _unkept(m, "procedure_groups", apheresis, "")
    assert worded == _unkept(m, "procedure_groups", apheresis, "plasma exchange") != plain
    assert m.procedure_groups(list(apheresis), "plasma exchange") == worded  # unhashable: read, not kept
    assert m.procedure_groups(apheresis, "") == plain


def test_two_maps_keep_their_own_answers(tmp_path):
    """A catalogue loaded from other maps (a site's edited copy) never reads the first one's answers."""
    shutil.copytree(REPO_ROOT / "mappings", tmp_path / "maps")
    first, second = load_mappings(REPO_ROOT / "mappings"), load_mappings(tmp_path / "maps")
    first.condition_text_reading("Systemic lupus erythematosus")
    assert first._memo.get("condition_text_reading") and not second._memo.get("condition_text_reading")


def test_the_memo_stays_bounded_whatever_the_texts(monkeypatch):
    m = load_mappings(REPO_ROOT / "mappings")
    monkeypatch.setattr(mp, "MEMO_ENTRIES", 50)
    for i in range(400):
        m.ingredient_for_text(f"drug number {i}")
        m.condition_groups("http://hl7.org/fhir/sid/icd-10-cm", f"Z{i:03d}")
        assert len(m._memo["ingredient_for_text"]) <= 50
        assert len(m._memo["_icd_groups"]) <= 50
    m.ingredient_for_text("y" * (mp.MEMO_KEY_CHARS + 1))
    assert ("y" * (mp.MEMO_KEY_CHARS + 1),) not in m._memo["ingredient_for_text"]
