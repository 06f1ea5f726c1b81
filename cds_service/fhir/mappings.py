"""Load the code mappings in `mappings/` into typed, indexed lookups.

The YAML is the reviewable source of truth; this module only validates its
shape and builds the dictionaries the normalizer needs (code -> variable,
code -> condition groups, code -> ingredient) so that every lookup at request
time is a dict or set hit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from cds_service import parsed_cache
from cds_service.fhir.codes import ATC, CVX, ICD10, ICD10CM, RXNORM, SNOMED, icd10_code
from cds_service.fhir.map_models import (
    ConditionMappings,
    MedicationMappings,
    ObservationMappings,
    PredicateMappings,
    ProcedureMappings,
)
from cds_service.fhir.negation import diagnosis_reading, negated_after, negated_at

T = TypeVar("T")
_NOT_KEPT = object()
MEMO_ENTRIES = 8_192  # answers kept per lookup; then its memo starts again (a few MiB at most)
MEMO_KEY_CHARS = 256  # a longer text (a note pasted into a concept) is read each time, never kept


def _chars(value: Any) -> int | None:
    """The characters of a text, or of a tuple of texts and such tuples (codings); None for anything else (a
    list, a generator: not a value that can be kept by)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, tuple):
        sizes = [_chars(v) for v in value]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    return None


def _keepable(*args: Any) -> bool:
    """Whether a lookup's arguments are values short enough to keep its answer by (`_memoised`)."""
    sizes = [_chars(a) for a in args]
    return None not in sizes and sum(sizes) <= MEMO_KEY_CHARS  # type: ignore[arg-type]


def _memoised(lookup: Callable[..., T]) -> Callable[..., T]:
    """A lookup of the maps by text (and codes) kept by its arguments: its answer depends on nothing else,
    and the same concepts come back in record after record (Synthea's 200 procedure codes across a whole
    screen), each a few dozen word patterns searched. Only texts and tuples of texts are kept by, of at most
    MEMO_KEY_CHARS together (a list or a generator of codings, a keyword call, a long text are read each
    time), and a lookup keeps at most MEMO_ENTRIES answers, so distinct hostile texts cannot grow it."""
    name = lookup.__name__

    @functools.wraps(lookup)
    def kept(self: Mappings, *args: Any, **kwargs: Any) -> T:
        if kwargs or not _keepable(*args):
            return lookup(self, *args, **kwargs)
        memo = self._memo.setdefault(name, {})
        hit = memo.get(args, _NOT_KEPT)
        if hit is _NOT_KEPT:
            hit = lookup(self, *args)
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[args] = hit
        return hit  # type: ignore[return-value]

    return kept


class Mappings:
    """All code mappings, indexed for constant-time lookup."""

    def __init__(
        self,
        observations: ObservationMappings,
        conditions: ConditionMappings,
        medications: MedicationMappings,
        procedures: ProcedureMappings | None = None,
        predicates: PredicateMappings | None = None,
    ) -> None:
        self.predicates = (predicates or PredicateMappings()).predicates
        self.observations = observations
        self.conditions = conditions
        self.medications = medications
        self.procedures = procedures or ProcedureMappings()
        self.variables = observations.variables
        self._memo: dict[str, dict[tuple, Any]] = {}  # answers of the text lookups (`_memoised`)
        self._index_observations(observations)
        self._index_conditions_and_procedures()
        self._index_medications(medications)

    def _index_observations(self, observations: ObservationMappings) -> None:
        # (system, code) -> variable key
        self.obs_index: dict[tuple[str, str], str] = {}
        for key, var in self.variables.items():
            for c in var.codes:
                prior = self.obs_index.setdefault((c.system, c.code), key)
                if prior != key:
                    raise ValueError(f"code {c.system}|{c.code} maps to both {prior} and {key}")
        q = observations.qualitative
        self.positive_codes = {(c.system, c.code) for c in q.positive_codes}
        self.negative_codes = {(c.system, c.code) for c in q.negative_codes}
        self.positive_words = {w.lower() for w in q.positive_words}
        self.negative_words = {w.lower() for w in q.negative_words}

    def group_labels(self, groups: frozenset[str], procedures: bool = False) -> str:
        """The labels of condition (or procedure) groups, in key order, as rules name them in their reasons:
        worked out once per set of groups (every rule that finds nothing on record says them)."""
        key = (groups, procedures)
        labels = self._group_labels.get(key)
        if labels is None:
            table = (self.procedures if procedures else self.conditions).groups
            labels = self._group_labels[key] = ", ".join(table[g].label for g in sorted(groups))
        return labels

    def _index_conditions_and_procedures(self) -> None:
        self._group_labels: dict[tuple[frozenset[str], bool], str] = {}
        # SNOMED concept -> groups; ICD-10-CM is matched by prefix/range per group (kept per code: _icd_groups)
        self.snomed_groups: dict[str, set[str]] = {}
        for key, g in self.conditions.groups.items():
            for code in g.snomed:
                self.snomed_groups.setdefault(code, set()).add(key)
        self.procedure_snomed: dict[str, set[str]] = {}
        for key, pg in self.procedures.groups.items():
            for code in pg.snomed:
                self.procedure_snomed.setdefault(code, set()).add(key)
        self._procedure_words = [
            (re.compile(r"(?<![a-z0-9])" + re.escape(w.lower()) + r"(?![a-z0-9])"), key)
            for key, pg in self.procedures.groups.items()
            for w in pg.words
        ]

    def _index_medications(self, meds: MedicationMappings) -> None:
        # Medication codes -> ingredient keys
        self.med_code_index: dict[tuple[str, str], str] = {}
        # ingredients given as vaccines (a CVX code): for them the immunization record is a source too
        self.vaccine_ingredients = frozenset(key for key, ing in meds.ingredients.items() if ing.cvx)
        for key, ing in meds.ingredients.items():
            for code in ing.rxnorm:
                self.med_code_index[(RXNORM, code)] = key
            for code in ing.cvx:
                self.med_code_index[(CVX, code)] = key
        self.atc_prefixes: list[tuple[str, str]] = sorted(
            ((p, key) for key, ing in meds.ingredients.items() for p in ing.atc),
            key=lambda t: -len(t[0]),
        )
        self.products = meds.products
        names = [(n.lower(), key) for key, ing in meds.ingredients.items() for n in ing.names]
        names.sort(key=lambda t: -len(t[0]))  # longest name first: "mycophenolic acid" before "mycophenolate"
        self._name_to_key = dict(names)
        self.name_pattern = _names_pattern(names)
        fallback = sorted(((n.lower(), k) for k, i in meds.ingredients.items() for n in i.fallback_names), key=_longest)
        self._fallback_to_key = dict(fallback)
        self.fallback_pattern = _names_pattern(fallback)
        self.ingredient_classes: dict[str, set[str]] = {}
        for cname, cls in meds.classes.items():
            for m in cls.members:
                self.ingredient_classes.setdefault(m, set()).add(cname)
        # criteria compare glucocorticoid doses as prednisone-equivalent mg/day
        steroids = meds.classes.get("glucocorticoids")
        self.steroid_ingredients = frozenset(steroids.members if steroids else ())
        self.non_systemic_snomed = set(meds.non_systemic_routes.snomed)
        self.non_systemic_words = [w.lower() for w in meds.non_systemic_routes.words]
        self.route_snomed = {code: key for key, r in meds.routes.items() for code in r.snomed}
        self.route_words = [
            (re.compile(r"(?<![a-z0-9])" + re.escape(w.lower()) + r"(?![a-z0-9])"), key)
            for key, r in meds.routes.items()
            for w in sorted(r.words, key=len, reverse=True)
        ]
        self.no_allergy_snomed = frozenset(meds.no_known_allergy.snomed)
        self.no_allergy_words = tuple(w.lower() for w in meds.no_known_allergy.words)

    # --- lookups ---------------------------------------------------------------------------

    def condition_groups(self, system: str, code: str) -> frozenset[str]:
        if system == SNOMED:
            return frozenset(self.snomed_groups.get(code, ()))
        if system in (ICD10CM, ICD10):  # WHO ICD-10's categories and subcategories mean what ICD-10-CM's do
            return self._icd_groups(icd10_code(code))  # "M320" is M32.0
        return frozenset()

    @_memoised  # kept per code like the text lookups: neither long nor endless distinct hostile codes
    def _icd_groups(self, code: str) -> frozenset[str]:
        """Groups of an ICD-10 code, matched by prefix or range against every group."""
        return frozenset(k for k, g in self.conditions.groups.items() if g.matches_icd10cm(code))

    def knows_condition_system(self, system: str) -> bool:
        """A code system the condition groups are written in: a code in it that matches no group is read
        (it names another disease), unlike a code in a system the maps cannot read at all."""
        return system in (SNOMED, ICD10CM, ICD10)

    def is_history_code(self, system: str, code: str) -> bool:
        h = self.conditions.history
        if system == SNOMED:
            return code in h.snomed
        return system in (ICD10CM, ICD10) and icd10_code(code).startswith(tuple(h.icd10cm))

    def condition_groups_from_text(self, text: str) -> frozenset[str]:
        """Groups the text states the patient has, whole words only, not negated ("no SLE", "SLE ruled out"),
        not another person's ("family history of SLE"), and not beside a phrase that names another disease
        ("drug-induced lupus"); a suspected one too (`condition_text_reading` tells which)."""
        return frozenset(g for g, r in self.condition_text_reading(text).items() if r in ("present", "doubtful"))

    @_memoised
    def condition_text_reading(self, text: str) -> Mapping[str, str]:
        """Per group the text names: "present", "doubtful" or "denied" (negation.diagnosis_reading). Kept by
        the memo, so read-only."""
        t = " ".join(text.lower().split())
        out = {}
        for key, g in self.conditions.groups.items():
            if g.words and not any(x in t for x in g.words_exclude):
                reading = diagnosis_reading(t, g.words)
                if reading:
                    out[key] = reading
        return MappingProxyType(out)

    @_memoised
    def text_names_a_group(self, text: str) -> bool:
        """The text names, as whole words, a disease the maps know, even negated or excluded ("no SLE",
        "drug-induced lupus"): it was understood, though it admits to no group. "Measles" is not "SLE", and
        an excluding phrase alone ("drug-induced seizures") names nothing the maps know."""
        words = set(re.findall(r"[a-z0-9]+", text.lower()))
        t = " ".join(re.findall(r"[a-z0-9]+", text.lower()))
        return any(
            (w in words) if " " not in w else (f" {w} " in f" {t} ")
            for g in self.conditions.groups.values()
            for w in (" ".join(re.findall(r"[a-z0-9]+", x)) for x in g.words)
        )

    def ingredient_for_code(self, system: str, code: str) -> str | None:
        key = self.med_code_index.get((system, code))
        if key:
            return key
        if system == RXNORM and code in self.products:
            return self.products[code].ingredient
        if system == ATC:
            for prefix, k in self.atc_prefixes:
                if code.startswith(prefix):
                    return k
        return None

    @_memoised
    def ingredient_for_text(self, text: str) -> str | None:
        m = self.name_pattern.search(text.lower()) if self.name_pattern else None
        if m:
            return self._name_to_key[m.group(1)]
        m = self.fallback_pattern.search(text.lower()) if self.fallback_pattern else None
        return self._fallback_to_key[m.group(1)] if m else None

    def route_of(self, codings: list[tuple[str, str]], text: str) -> str:
        """The route a dosage's route concept names: a key of `routes`, "non-systemic" (topical, inhaled...),
        or "unrecognised" (never read as any particular route)."""
        for system, code in codings:
            if system == SNOMED and code in self.route_snomed:
                return self.route_snomed[code]
            if system == SNOMED and code in self.non_systemic_snomed:
                return "non-systemic"
        t = " ".join(text.lower().split())
        hits = {key for pattern, key in self.route_words if pattern.search(t)} if t else set()
        if len(hits) == 1:
            return hits.pop()
        if not hits and any(w in t for w in self.non_systemic_words) and t:
            return "non-systemic"
        return "unrecognised"

    @_memoised
    def ingredients_in_text(self, text: str) -> tuple[frozenset[str], frozenset[str]]:
        """Every ingredient free text names, negation first (allergy lists: "no known allergy to penicillin"):
        (named, doubtful). A name with a negation cue before it in its clause is not named; one with a cue
        after it ("cyclophosphamide allergy ruled out") is doubtful, for a person to read."""
        t = " ".join(text.lower().split())
        named: set[str] = set()
        doubtful: set[str] = set()
        for m in self.name_pattern.finditer(t) if self.name_pattern else ():
            if negated_at(t, m.start()):
                continue
            key = self._name_to_key[m.group(1)]
            (doubtful if negated_after(t, m.end()) else named).add(key)
        return frozenset(named), frozenset(doubtful - named)

    @_memoised
    def procedure_groups(self, codings: Iterable[tuple[str, str]], text: str) -> frozenset[str]:
        """Groups of a procedure: by SNOMED CT code and by words in its text and displays."""
        hits = {g for system, code in codings if system == SNOMED for g in self.procedure_snomed.get(code, ())}
        if text:  # a general code ("Apheresis") with specific words ("plasmapheresis"): both count
            t = text.lower()
            hits |= {key for pattern, key in self._procedure_words if pattern.search(t)}
        return frozenset(hits)

    def class_members(self, cls: str) -> set[str]:
        return set(self.medications.classes[cls].members)


def _longest(t: tuple[str, str]) -> int:
    return -len(t[0])


def _names_pattern(names: list[tuple[str, str]]) -> re.Pattern[str] | None:
    """One regex for whole-word names, longest first ("mycophenolic acid" before "mycophenolate")."""
    if not names:
        return None
    return re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(n) for n, _ in names) + r")(?![a-z0-9])")


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the maps load in a tenth of the time


def _read(path: Path) -> dict:
    """One map file. Loaded by every screen worker and every service start, so with libyaml's loader (the
    same safe constructors as `yaml.safe_load`, in C) where PyYAML was built with it, and parsed once per
    content (`parsed_cache`)."""
    data = path.read_bytes()
    parse = lambda: yaml.load(data.decode("utf-8"), Loader=_LOADER)  # noqa: E731, S506 - a safe loader
    return parsed_cache.tree(path, data, parse, code=(__file__,))[0]


def load_mappings(folder: str | Path) -> Mappings:
    """Read and validate the maps: observations, conditions, medications, procedures, predicates (YAML)."""
    folder = Path(folder)
    procedures = folder / "procedures.yaml"
    predicates = folder / "predicates.yaml"
    return Mappings(
        ObservationMappings.model_validate(_read(folder / "observations.yaml")),
        ConditionMappings.model_validate(_read(folder / "conditions.yaml")),
        MedicationMappings.model_validate(_read(folder / "medications.yaml")),
        ProcedureMappings.model_validate(_read(procedures)) if procedures.exists() else None,
        PredicateMappings.model_validate(_read(predicates)) if predicates.exists() else None,
    )
