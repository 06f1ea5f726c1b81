"""Values worked out from short texts, kept by the text (dates, code systems).

Records repeat the same few texts resource after resource and record after record (an encounter's time,
http://loinc.org), and a look-up costs a tenth of working one out again. Bounded, so that neither long nor
endless distinct hostile texts grow it: past `limit` texts the memo starts again, and a text longer than
`chars` is never kept.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Kept(dict[K, T]):
    """A dict (its `get` is the C one) that `keep` fills within its bounds. `chars` None: keys of any length
    (the engine's answers, kept by criterion, date and sources read)."""

    def __init__(self, limit: int, chars: int | None = None) -> None:
        super().__init__()
        self.limit, self.chars = limit, chars

    def keep(self, text: K, value: T) -> T:
        """`value`, kept under `text` when the text is short enough."""
        if self.chars is None or len(text) <= self.chars:  # type: ignore[arg-type]
            if len(self) >= self.limit:
                self.clear()
            self[text] = value
        return value
