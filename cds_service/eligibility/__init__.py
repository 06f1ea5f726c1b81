"""Deciding eligibility: trial files and their criteria (trials), the rule vocabulary (rules), the engine
that evaluates a trial for one patient's facts (engine), the report it produces, the loaded catalogue,
and the impact of draft orders (orders)."""

# Each rule family registers its kinds (parser and evaluator) in rules.LEAVES when imported.
from cds_service.eligibility import (  # noqa: E402, F401
    allergies,
    conditions,
    demographics,
    doses,
    labs,
    medications,
    predicates,
    procedures,
)
