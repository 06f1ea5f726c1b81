"""Values worked out from short texts, kept by the text (dates, code systems).

Records repeat the same few texts resource after resource and record after record (an encounter's time,
http://loinc.org), and a look-up costs a tenth of working one out again. Bounded, so that neither long nor
endless distinct hostile texts grow it: past `limit` texts the memo starts again, and a text longer than
`chars` is never kept.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Kept(dict[str, T]):
    """A dict (its `get` is the C one) that `keep` fills within its bounds."""

    def __init__(self, limit: int, chars: int) -> None:
        super().__init__()
        self.limit, self.chars = limit, chars

    def keep(self, text: str, value: T) -> T:
        """`value`, kept under `text` when the text is short enough."""
        if len(text) <= self.chars:
            if len(self) >= self.limit:
                self.clear()
            self[text] = value
        return value
