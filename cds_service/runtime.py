"""Process-wide tuning shared by the service and the screen's workers; how a command takes Ctrl-C and
SIGTERM; and its work folders, whose clean-up a signal must not cut short."""

from __future__ import annotations

import _thread
import fcntl
import gc
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    signals a random 0-30 ms apart). Only the main thread can set handlers; elsewhere the block simply runs
    (Python runs signal handlers in the main thread anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    try:
        with signals_to(lambda signum, frame: caught.append(signum)):
            yield
    finally:
        for s in dict.fromkeys(caught):  # each once, in the order they came, to the handler it had
            signal.raise_signal(s)


@contextmanager
def signals_to(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """SIGINT and SIGTERM sent to `handler` within the block, then to the handlers they had (from the main
    thread only). A signal whoever started the process ignores (a background job's SIGINT, `trap '' INT`)
    stays ignored; a handler that was not set from Python (`getsignal` is None) cannot be put back, so its
    signal is left alone too."""
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (None, signal.SIG_IGN)]
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, was in previous.items():
            signal.signal(s, was)


class Interruption:
    """Ctrl-C or SIGTERM unwinds the block as KeyboardInterrupt, once (`interrupted_once`)."""

    def __init__(self) -> None:
        self.happened = False  # and maybe turned into a library's own error (DuckDB's "Query interrupted")
        self._signum = signal.SIGINT
        self.again: threading.Timer | None = None  # a signal to give again (`unraisable`)

    def handler(self, signum: int, frame: object) -> None:
        if not self.happened:
            self.happened, self._signum = True, signum
            raise KeyboardInterrupt

    def unraisable(self, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`sys.unraisablehook` that gives the signal again when its KeyboardInterrupt was raised where Python
        can only print it (a finalizer, an after-fork callback) and so unwound nothing. Given again from a
        thread a moment later: given here, it would be raised in this hook, and printed again; by then the
        main thread is back in the code that ran the finalizer."""

        def redeliver(unraisable: Any) -> None:
            if self.happened and issubclass(unraisable.exc_type, KeyboardInterrupt):
                self.happened = False
                self.again = threading.Timer(0.01, _thread.interrupt_main, (self._signum,))
                self.again.daemon = True
                self.again.start()
            else:
                hook(unraisable)

        return redeliver


@contextmanager
def interrupted_once() -> Iterator[Interruption]:
    """Ctrl-C or SIGTERM (a job runner stopping a command) unwinds the block as KeyboardInterrupt, so what
    it made is cleaned up (by default SIGTERM would end the process where it stands and leave it all).
    Later signals are ignored while that clean-up runs: raised in the middle of it, one cut it short (a
    folder left, a traceback from a finalizer it landed in). The clean-up must be bounded; SIGKILL still
    ends the process."""
    state = Interruption()
    hook = sys.unraisablehook
    sys.unraisablehook = state.unraisable(hook)
    try:
        with signals_to(state.handler):
            yield state
    finally:
        sys.unraisablehook = hook
        if state.again is not None:  # the block is over: given now, it would raise past every handler
            state.again.cancel()


def remove_folder(path: str | os.PathLike[str]) -> None:
    """Delete a work folder of ours whole, whatever is missing from it, with interrupts held (`interrupts_held`):
    a removal cut short leaves the rest of the folder (the size of the export, for partitions) behind."""
    with interrupts_held():
        shutil.rmtree(path, ignore_errors=True)


LOCK = ".in-use"  # in a scratch folder: locked (flock) while its process lives


class Scratch:
    """A new folder of $TMPDIR for a process's work files, removed by `remove` (with interrupts held), and
    locked while it is in use: the folders of a process killed outright (SIGKILL, the out-of-memory killer),
    which nothing could remove, are removed by the next process that makes one with the same prefix
    (`sweep`). Partitions are the size of the export: a few of them left behind would fill the disk.

    The lock is taken on a file before it gets its name, so no folder is ever seen with its lock free while
    its process lives; the lock is the kernel's, so it is free once that process and every process that
    inherited it (forked workers) have ended, however they ended."""

    def __init__(self, prefix: str) -> None:
        with interrupts_held():  # a folder made but not yet locked would never be swept
            sweep(prefix)
            self.path = Path(tempfile.mkdtemp(prefix=prefix))
            fd, name = tempfile.mkstemp(dir=self.path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(name, self.path / LOCK)
            self._lock: int | None = fd  # (interrupted at the end: held until this process ends, then swept)

    def remove(self) -> None:
        remove_folder(self.path)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def sweep(prefix: str) -> list[Path]:
    """Remove the scratch folders `prefix*` of $TMPDIR that this user made and no live process holds (their
    lock is free); folders without a lock (another program's, or ours being made) and other users' are left
    alone. The folders removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            st = folder.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # in use
            os.close(fd)
            continue
        try:
            remove_folder(folder)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A `Scratch` folder, removed however the block ends (not `TemporaryDirectory`, whose removal a second
    Ctrl-C or SIGTERM cuts short)."""
    scratch = Scratch(prefix)
    try:
        yield scratch.path
    finally:
        scratch.remove()
