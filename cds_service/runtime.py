"""Process-wide tuning shared by the service and the screen's workers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc(threshold: int) -> None:
    """Keep the start-up heap (catalog, models) out of every collection and collect young objects less often.

    Parsing a multi-MB prefetch creates hundreds of thousands of containers; with Python's
    default gen-0 threshold (700) the collector rescans them again and again, which made
    parsing 2.5-4x slower in bench/. The code creates no reference cycles on the hot path.
    """
    gc.collect()
    gc.freeze()
    if threshold > 0:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(threshold, max(g1, 50), max(g2, 100))


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collection while a screen's worker reads and evaluates one partition, then one of what is left.

    A partition holds a million parsed containers until its last patient is evaluated, and the start-up
    heap is frozen (`tune_gc`), so Python's full collections (due whenever the objects that survived
    since the last one are a quarter of the oldest generation) kept walking the partition: 3-7 % of a
    partition's evaluation, measured on Synthea and SLE exports. Everything it holds is freed by reference
    counting when it is done (nothing on the path makes cycles); the collection at the end frees whatever
    an unexpected cycle kept."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
            gc.collect()
