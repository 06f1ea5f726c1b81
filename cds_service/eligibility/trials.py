"""Trials as data: load `trials/*.yaml`, validate them, compile their rules once.

Each criterion quotes its source text and carries either a computable `rule`
or `review` with the reason a person must decide. `also_review` marks a rule
that decides only part of the text (the rest still needs a person).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from cds_service.eligibility.rules import Rule, RuleError, RuleParser
from cds_service.fhir.mappings import Mappings


class Site(BaseModel):
    name: str
    city: str | None = None
    region: str | None = None
    country: str | None = None


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["inclusion", "exclusion"]
    text: str = Field(min_length=3)
    rule: dict | None = None
    review: str | None = None
    also_review: str | None = None
    alternatives: str | None = None  # the criterion's own text naming what stays allowed (order warnings quote it)
    # a rule proposed on import, for a person to check and promote to `rule`; never evaluated
    suggested_rule: dict | None = None
    _compiled: Rule | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _rule_or_review(self) -> Criterion:
        if (self.rule is None) == (self.review is None):
            raise ValueError(f"criterion {self.id}: give exactly one of 'rule' or 'review'")
        if self.also_review and self.rule is None:
            raise ValueError(f"criterion {self.id}: 'also_review' only goes with a rule")
        return self

    @property
    def compiled(self) -> Rule | None:
        return self._compiled

    @property
    def computable(self) -> bool:
        return self.rule is not None


class Entry(BaseModel):
    """Cohort entry: the disease the trial studies. Without that diagnosis on record the trial says
    nothing about the patient (no card, `ineligible` with this reason), before any criterion is read."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(min_length=1)  # condition groups of mappings/conditions.yaml; any one admits
    text: str = Field(min_length=3)  # the source's words naming the population, quoted like a criterion


class LeftOut(BaseModel):
    """A bullet of the source deliberately not encoded, quoted, with the reason: so lint can tell a choice
    from a bullet that was forgotten or deleted (see authoring/bullets.py)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=3)  # quoted from the source like a criterion (` ... ` elides)
    reason: str = Field(min_length=10)


class Trial(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^NCT\d{8}$")
    title: str
    short_title: str | None = None
    sponsor: str
    phase: str
    status: str
    url: str
    conditions: list[str] = Field(default_factory=list)
    intervention: str | None = None
    sites: list[Site]
    min_age: int | None = None
    max_age: int | None = None
    sex: Literal["all", "female", "male"] = "all"
    source: str
    entry: Entry
    notes: list[str] = Field(default_factory=list)  # caveats a reviewer must see on every card (source gaps)
    # `import` writes `draft: true`: the criteria are not yet encoded, so the trial is never evaluated (no
    # card, no screen verdict: "draft, not yet encoded") until a person encodes it and removes the flag.
    # Distinct from `status`, the registry's recruitment status.
    draft: bool = False
    left_out: list[LeftOut] = Field(default_factory=list)  # source bullets deliberately not encoded
    criteria: list[Criterion]
    _variables: set[str] = PrivateAttr(default_factory=set)
    _entry_groups: frozenset[str] = PrivateAttr(default=frozenset())
    _plan: list[tuple[Criterion, Rule | None]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Trial:
        seen: set[str] = set()
        for c in self.criteria:
            if c.id in seen:
                raise ValueError(f"{self.id}: duplicate criterion id {c.id}")
            seen.add(c.id)
        return self

    def compile(self, mappings: Mappings) -> Trial:
        parser = RuleParser(mappings)
        try:
            self._entry_groups = parser.condition_groups(self.entry.groups)
        except RuleError as e:
            raise RuleError(f"{self.id} entry: {e}") from e
        for c in self.criteria:
            if c.rule is not None:
                try:
                    c._compiled = parser.parse(c.rule)
                except RuleError as e:
                    raise RuleError(f"{self.id} criterion {c.id}: {e}") from e
        self._variables = parser.variables_used
        self._plan = [(c, c._compiled) for c in self.criteria]
        return self

    @property
    def plan(self) -> list[tuple[Criterion, Rule | None]]:
        """(criterion, compiled rule or None) in page order: read once per evaluation."""
        return self._plan

    @property
    def entry_groups(self) -> frozenset[str]:
        return self._entry_groups

    @property
    def variables(self) -> set[str]:
        return self._variables

    @property
    def label(self) -> str:
        return self.short_title or self.title


def load_trials(folder: str | Path, mappings: Mappings) -> dict[str, Trial]:
    """Every `*.yaml` in `folder`, compiled against the mappings, keyed by NCT id."""
    trials: dict[str, Trial] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
        trial = Trial.model_validate(data).compile(mappings)
        if trial.id != path.stem:
            raise RuleError(f"{path.name}: file name must be the trial id {trial.id}")
        trials[trial.id] = trial
    return trials
