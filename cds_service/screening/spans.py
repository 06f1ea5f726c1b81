"""Byte ranges of an export's files, so several workers can route one file at once.

Routing (route.py) reads every byte of the export once; on one core that pass alone is more than the
floor of parsing everything, so a screen with more workers must share it. A plain NDJSON file is cut into
spans at byte offsets; each span holds the lines that *start* in it, so a line crossing a cut belongs to
the span it began in and no line is read twice or lost, whatever the line lengths. A gzip file cannot be
entered in the middle: it is one span.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cds_service.screening.bulk import ReadStats, _open, blocks

SPAN_BYTES = 16 * 1024 * 1024  # at least this much per span: a worker's task costs a few file opens
MAX_SPAN_BYTES = 128 * 1024 * 1024  # at most: what a router keeps of a span (its judged lines) stays bounded


@dataclass(frozen=True)
class Span:
    """The lines starting in [start, end) of `path`'s bytes; `end` None: to the end of the file."""

    path: Path
    start: int = 0
    end: int | None = None


def spans_of(paths: list[Path], workers: int, fixed: int | None = None) -> list[Span]:
    """Spans of about the same size: at least SPAN_BYTES, and several per worker so the cores stay busy to
    the end; or of `fixed` bytes whatever the export's size (what a router holds of a span, the patient
    ids of a Patient file, then stays bounded as the export grows)."""
    total = sum(p.stat().st_size for p in paths if p.suffix != ".gz")
    size = fixed or min(MAX_SPAN_BYTES, max(SPAN_BYTES, total // (8 * max(1, workers)) + 1))
    out = []
    for path in paths:
        length = path.stat().st_size
        if path.suffix == ".gz" or length <= size:
            out.append(Span(path))
            continue
        cuts = list(range(0, length, size))
        out.extend(Span(path, a, b) for a, b in zip(cuts, [*cuts[1:], None], strict=True))
    return out


def line_start(f: IO[bytes], pos: int, piece: int = 1 << 16) -> int:
    """The offset of the first line that starts at or after `pos` (the file's length past its last line)."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    at = pos - 1
    while data := f.read(piece):
        nl = data.find(b"\n")
        if nl >= 0:
            return at + nl + 1
        at += len(data)
    return at


class _Bounded:
    """A file read from where it stands for `left` bytes only."""

    def __init__(self, f: IO[bytes], left: int) -> None:
        self.f, self.left = f, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n > 0 else b""
        self.left -= len(data)
        return data


def span_blocks(span: Span, max_bytes: int, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """`bulk.blocks` of the lines starting in the span, at their offsets in the file."""
    if span.start == 0 and span.end is None:
        with _open(span.path) as f:
            yield from blocks(f, max_bytes, stats)
        return
    with span.path.open("rb") as f:
        first = line_start(f, span.start)
        last = line_start(f, span.end) if span.end is not None else f.seek(0, 2)
        f.seek(first)
        for offset, buf in blocks(_Bounded(f, last - first), max_bytes, stats):  # type: ignore[arg-type]
            yield first + offset, buf
