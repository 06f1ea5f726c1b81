"""One lint finding: where it is (file, line, trial, criterion), what to fix, and how serious it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    trial: str | None
    criterion: str | None
    message: str
    # a warning (a draft, a variable without a plausible range) is printed but neither fails lint nor
    # keeps the trial out of the service; an error does both
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = " ".join(x for x in (self.trial, f"criterion {self.criterion}" if self.criterion else None) if x)
        level = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {level}{where + ': ' if where else ''}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"
