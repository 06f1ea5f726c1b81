"""Process-wide tuning shared by the service and the screen's workers, and the clean-ups a signal must not
cut short."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM held back until a short clean-up is done, then delivered to the handler
    they had (which raises KeyboardInterrupt, or ends the process).

    A clean-up cut short half-way does harm: workers killed but not yet gone may still be writing into the
    folder being deleted, and `shutil.rmtree` interrupted just after one of its `os.close` calls closes that
    descriptor again in its `finally` (EBADF: a CI run met it, a second SIGTERM during a failed screen's
    clean-up printing `cannot write the results` and leaving the partitions behind; 1 run in 139 with the two
    signals a random 0-30 ms apart). Only the main thread can set
    handlers; elsewhere the block simply runs (Python runs signal handlers in the main thread anyway). A
    handler that was not set from Python (`getsignal` is None) cannot be put back, so its signal is not held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):  # each once, in the order they came
            signal.raise_signal(s)


def remove_folder(path: str | os.PathLike[str]) -> None:
    """Delete a work folder of ours whole, whatever is missing from it, with interrupts held (`interrupts_held`):
    a removal cut short leaves the rest of the folder (the size of the export, for partitions) behind."""
    with interrupts_held():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A new folder of $TMPDIR, removed whole however the block ends (`remove_folder`; not
    `TemporaryDirectory`, whose removal a second Ctrl-C or SIGTERM cuts short)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        remove_folder(folder)
