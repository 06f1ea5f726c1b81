"""Deciding eligibility: trial files and their criteria (trials), the rule vocabulary (rules), the engine
that evaluates a trial for one patient's facts (engine), the report it produces, the loaded catalogue,
and the impact of draft orders (orders)."""
