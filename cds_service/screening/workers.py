"""The screen's worker processes: forked when that is safe, and never waiting for ever on one that died.

A `concurrent.futures.ProcessPoolExecutor`, not a `multiprocessing.Pool`: when a worker dies in the
middle of a task (the kernel's out-of-memory killer, a `kill -9`), the Pool waits for that task's result
for ever, so an overnight screen would simply never finish; the executor raises `BrokenProcessPool`
instead, and the screen stops with a message. This module knows nothing of screening: `run.worker_pool`
gives it the start-up of each kind of worker.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from types import TracebackType
from typing import Any

from cds_service.interrupts import interrupts_held
from cds_service.scratch import Scratch

__all__ = ["BrokenProcessPool", "NoWorkers", "Workers", "start"]

Start = tuple[Callable[..., None], tuple[Any, ...]]  # a worker's initializer and its arguments


class NoWorkers(RuntimeError):
    """The worker processes could not be started (the machine out of processes or memory)."""


def _to_file(fn: Callable[[Any], Any], job: Any, folder: str) -> str:
    """Run `fn(job)` in a worker and leave its result in a file of `folder`: only the file's name goes back
    through the pipe. A worker killed while it wrote a result of megabytes into the pipe left half a message
    there, and the executor's reader waited for the rest for ever (the screen process holds the pipe's other
    end, so no end of file comes); a name, under the pipe's 4 KiB, is written whole or not at all."""
    result = fn(job)
    fd, path = tempfile.mkstemp(dir=folder, suffix=".pickle")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(result, f, pickle.HIGHEST_PROTOCOL)
    return path


def _from_file(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - written just now by this screen's own worker
    finally:
        os.unlink(path)


class Workers:
    """Worker processes: tasks submitted, results as they finish, and `stop` to end them now."""

    def __init__(self, executor: ProcessPoolExecutor, method: str) -> None:
        self._executor, self.method = executor, method
        self._results = Scratch("screen-results-")  # `_to_file`'s results, each read back once

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        return self._executor.submit(fn, *args)

    def call(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        return self.submit(fn, *args).result()

    def unordered(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Any]:
        """`fn(job)` of every job, submitted now, in the order they finish; `BrokenProcessPool` if a worker
        died. A result is let go of once given (the futures are not kept); tasks left when the caller stops
        reading are cancelled by `stop` or `close` (by the executor's own thread: cancelling them here could
        race it failing them all when a worker dies, which raised in that thread)."""
        folder = str(self._results.path)
        pending = {self._executor.submit(_to_file, fn, job, folder) for job in jobs}
        return self._finished(pending)

    @staticmethod
    def _finished(pending: set[Future]) -> Iterator[Any]:
        for done in as_completed(pending):  # which lets go of each future it gives
            pending.discard(done)
            path = done.result()
            del done
            yield _from_file(path)

    def stop(self) -> None:
        """End the workers now, running tasks included, then wait for them to be gone: a screen that failed
        deletes its partitions next, and no worker may still be writing into them. SIGKILL, which a stopped
        or busy worker cannot hold off (a worker keeps nothing that needs its own clean-up: its files are in
        the folders the screen removes)."""
        try:
            with interrupts_held():  # a Ctrl-C between kills would leave a worker writing into what is deleted next
                _kill(list((self._executor._processes or {}).values()))  # Python 3.14: kill_workers()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._executor.shutdown(wait=True, cancel_futures=True)
        finally:
            self._results.remove()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop() if kind is not None else self.close()


def start(workers: int, fork: Start, spawn: Start | str) -> Workers:
    """`workers` processes, forked and started by `fork` when this process runs no other thread, else
    spawned and started by `spawn` (or a ValueError with `spawn`, the reason they cannot be).

    A forked worker starts in milliseconds with what this process has loaded, where a spawned one imports the
    package again. A process with another thread is not forked: a lock that thread held at that moment would
    stay held in the worker (Python warns of it from 3.12). The workers are forked here and now, before the
    caller starts a thread of its own (a progress bar's). A heap nothing had frozen is frozen across the
    fork, so a worker's collections do not copy the pages it inherited; one that was frozen (`tune_gc`) is
    left as it was, so what was garbage at the fork is still collected."""
    if _threads() > 1 or "fork" not in mp.get_all_start_methods():
        if isinstance(spawn, str):
            raise ValueError(spawn)
        return Workers(_executor(workers, "spawn", spawn), "spawn")
    thawed = gc.get_freeze_count() == 0
    if thawed:
        gc.freeze()
    executor = _executor(workers, "fork", fork)
    pool = Workers(executor, "fork")
    try:
        # forks every worker now (the executor forks them all on its first task); a Ctrl-C meanwhile comes
        # after, here, so the workers forked by then are stopped (else they waited for tasks for ever)
        with interrupts_held():
            executor.submit(int)
    except BaseException as e:  # and a fork refused (EAGAIN): the workers forked already
        pool.stop()
        if isinstance(e, Exception):
            raise NoWorkers(f"the worker processes could not be started ({type(e).__name__})") from e
        raise
    finally:
        if thawed:
            gc.unfreeze()
    return pool


def _executor(workers: int, method: str, how: Start) -> ProcessPoolExecutor:
    """The pool, each worker started by `_started` with `how` and this process's pid (its parent's)."""
    return ProcessPoolExecutor(workers, mp.get_context(method), initializer=_started, initargs=(os.getpid(), *how))


def _started(parent: int, initializer: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A worker's start: `initializer(*args)`, and a watch that ends the worker once the screen process is
    gone. A screen SIGKILLed (a job runner's grace period over, the out-of-memory killer choosing it) cannot
    stop its workers, and they waited for tasks for ever, each holding its memory; the pipe they wait on
    never ends, since every worker holds a copy of its other end."""
    initializer(*args)  # first: it sets the worker's signals (a thread started before could take a Ctrl-C)
    threading.Thread(target=_watch, args=(parent,), name="screen-parent-watch", daemon=True).start()


def _watch(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:  # an orphan's parent becomes init (or a subreaper)
        time.sleep(every)
    os._exit(1)


def _kill(processes: list[mp.process.BaseProcess], seconds: float = 10.0) -> None:
    """SIGKILL `processes` and wait until they are gone: a worker killed in the middle of a system call ends
    it first (a file it was creating is created). Their sentinels, not `join`, so the executor's own thread
    still reaps them; `seconds` bounds the wait for one the kernel holds (a hung network file system)."""
    alive = [p for p in processes if p.is_alive()]
    for p in alive:
        p.kill()
    sentinels = [p.sentinel for p in alive]
    deadline = time.monotonic() + seconds
    while sentinels and time.monotonic() < deadline:
        ended = wait(sentinels, max(0.0, deadline - time.monotonic()))
        sentinels = [s for s in sentinels if s not in ended]


def _threads() -> int:
    """The threads this process runs: the kernel's count where there is one (a library's native threads,
    DuckDB's say, are not in `threading`'s), else Python's."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()
