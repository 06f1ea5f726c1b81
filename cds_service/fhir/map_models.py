"""The shape of `mappings/*.yaml`: one pydantic model per map, validated as the files load.

A wrong shape stops loading with the field that is wrong; the indexes built from these models
(mappings.py) are what the reader looks codes up in.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VariableKind = Literal["quantity", "qualitative", "titer", "grade", "coded"]


class Coding(BaseModel):
    model_config = ConfigDict(frozen=True)
    system: str
    code: str
    display: str | None = None


class Plausible(BaseModel):
    """The values a result of this variable can take in a living patient, in its canonical unit, and where
    that range comes from. Lint refuses a threshold outside it (a unit slip: "80 g/dL" meant 80 g/L),
    because such a threshold would silently make every patient fail or pass the criterion."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float
    max: float
    source: str = Field(min_length=10)

    @model_validator(mode="after")
    def _ordered(self) -> Plausible:
        if self.min >= self.max:
            raise ValueError(f"plausible range: min {self.min} must be below max {self.max}")
        return self


class Variable(BaseModel):
    """One clinical variable a criterion can test, and the codes that carry it."""

    key: str = ""
    label: str
    kind: VariableKind
    unit: str | None = None
    units: dict[str, float] = Field(default_factory=dict)
    unit_family: str | None = None
    current_days: int = 30
    uln_default: float | None = None
    lln_default: float | None = None
    positive_above: float | None = None
    derived: str | None = None
    codes: list[Coding]
    answers: dict[str, str] = Field(default_factory=dict)
    positive_persists_days: int | None = None
    positive_lifelong: bool = False  # antibodies that stay positive for life (HIV, treponemal)
    also_from: list[str] = Field(default_factory=list)
    units_elsewhere: dict[str, str] = Field(default_factory=dict)
    plausible: Plausible | None = None  # canonical unit; authoring checks thresholds against it

    def factor(self, unit: str | None) -> float | None:
        """Factor taking a value in `unit` to the canonical unit, or None if not accepted."""
        if unit is None:
            unit = ""
        f = self.units.get(unit)
        if f is None:
            f = self.units.get(unit.strip())
        return f

    @property
    def primary(self) -> Coding:
        return self.codes[0]


class QualitativeVocabulary(BaseModel):
    positive_codes: list[Coding]
    negative_codes: list[Coding]
    positive_words: list[str]
    negative_words: list[str]


class ObservationMappings(BaseModel):
    local_system: str
    # the code systems of a site's own laboratory codes (its LIS), declared so that a code under any other
    # system that is not LOINC is still taken for a mistyped system URL (tests/test_code_syntax.py)
    site_systems: list[str] = Field(default_factory=list)
    unit_families: dict[str, dict[str, float]]
    variables: dict[str, Variable]
    qualitative: QualitativeVocabulary

    @model_validator(mode="after")
    def _resolve(self) -> ObservationMappings:
        for system in self.site_systems:
            if not system.startswith(("http://", "https://", "urn:oid:", "urn:uuid:")):
                raise ValueError(f"site_systems: {system[:80]!r} is not a code system URI (http(s) or urn:oid:)")
        for key, var in self.variables.items():
            var.key = key
            if var.unit_family:
                family = self.unit_families.get(var.unit_family)
                if family is None:
                    raise ValueError(f"variable {key}: unknown unit_family {var.unit_family}")
                var.units = {**family, **var.units}
            if var.kind in ("quantity", "titer") and not var.unit:
                raise ValueError(f"variable {key}: a {var.kind} needs a canonical unit")
            if var.unit and var.units and var.factor(var.unit) != 1:
                raise ValueError(f"variable {key}: canonical unit {var.unit} must have factor 1")
            for other in [*var.also_from, *var.units_elsewhere.values()]:
                if other not in self.variables:
                    raise ValueError(f"variable {key}: refers to unknown variable {other}")
        return self


class ConditionGroup(BaseModel):
    key: str = ""
    label: str
    snomed: list[str] = Field(default_factory=list)
    icd10cm: list[str] = Field(default_factory=list)
    icd10cm_ranges: list[str] = Field(default_factory=list)
    icd10cm_exclude: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)
    # phrases that, found in the same text, mean the words name another disease ("drug-induced lupus")
    words_exclude: list[str] = Field(default_factory=list)
    # a disease that does not resolve (SLE): any clinical status on record still means the patient has it
    lifelong: bool = False
    # a state that cannot stay true longer than this (pregnancy): recorded active since longer ago, a person
    # checks it is current, never a permanent fail from a code left on the problem list
    lasts_days: int | None = None
    # an event dated by its onset (MI, stroke): its clinical status says nothing about "within N months"
    acute_event: bool = False

    @cached_property
    def _ranges(self) -> list[tuple[str, str]]:
        out = []
        for r in self.icd10cm_ranges:
            lo, hi = r.split("-")
            out.append((lo, hi))
        return out

    def matches_icd10cm(self, code: str) -> bool:
        c = code.upper()
        if any(c.startswith(x) for x in self.icd10cm_exclude):
            return False
        if any(c.startswith(x) for x in self.icd10cm):
            return True
        cat = c[:3]
        return any(lo <= cat <= hi for lo, hi in self._ranges)


class HistoryCodes(BaseModel):
    """Codes that record a past condition ("history of", "old MI")."""

    icd10cm: list[str] = Field(default_factory=list)
    snomed: list[str] = Field(default_factory=list)


class ConditionMappings(BaseModel):
    history: HistoryCodes = Field(default_factory=HistoryCodes)
    groups: dict[str, ConditionGroup]

    @model_validator(mode="after")
    def _keys(self) -> ConditionMappings:
        for key, g in self.groups.items():
            g.key = key
        return self


class ProcedureGroup(BaseModel):
    key: str = ""
    label: str
    snomed: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)


class ProcedureMappings(BaseModel):
    groups: dict[str, ProcedureGroup] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys(self) -> ProcedureMappings:
        for key, g in self.groups.items():
            g.key = key
        return self


class Predicate(BaseModel):
    label: str
    rule: dict


class PredicateMappings(BaseModel):
    predicates: dict[str, Predicate] = Field(default_factory=dict)


class Ingredient(BaseModel):
    key: str = ""
    rxnorm: list[str] = Field(default_factory=list)
    atc: list[str] = Field(default_factory=list)
    cvx: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    # names that say only what a product is for ("COVID-19 vaccine"): read only when the text names no
    # product of `names` ("COVID-19 vaccine, Novavax" is Novavax)
    fallback_names: list[str] = Field(default_factory=list)
    pred_eq: float | None = None
    systemic_only: bool = False
    same_drug: str | None = None

    @property
    def drug(self) -> str:
        """The drug this ingredient counts as in "N different drugs"."""
        return self.same_drug or self.key


class MedicationClass(BaseModel):
    label: str
    members: list[str]


class Product(BaseModel):
    ingredient: str
    strength_mg: float | None = None
    display: str | None = None


class NonSystemicRoutes(BaseModel):
    snomed: list[str]
    words: list[str]


class RouteMap(BaseModel):
    snomed: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)


class NoKnownAllergy(BaseModel):
    snomed: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)


class MedicationMappings(BaseModel):
    ingredients: dict[str, Ingredient]
    classes: dict[str, MedicationClass]
    products: dict[str, Product] = Field(default_factory=dict)
    non_systemic_routes: NonSystemicRoutes
    no_known_allergy: NoKnownAllergy = Field(default_factory=NoKnownAllergy)
    routes: dict[str, RouteMap] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> MedicationMappings:
        for key, ing in self.ingredients.items():
            ing.key = key
        for cname, cls in self.classes.items():
            for m in cls.members:
                if m not in self.ingredients:
                    raise ValueError(f"class {cname}: unknown ingredient {m}")
        for code, p in self.products.items():
            if p.ingredient not in self.ingredients:
                raise ValueError(f"product {code}: unknown ingredient {p.ingredient}")
        return self
