"""How a command takes Ctrl-C and SIGTERM: it unwinds once and cleans up (`interrupted_once`), and a short
clean-up that must not be cut half-way holds them back until it is done (`interrupts_held`)."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any


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
def signals_to(handler: Callable[[int, Any], Any], afterwards: Callable[[Any], Any] | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM sent to `handler` within the block, then to the handlers they had, or to what
    `afterwards(had)` says (from the main thread only). A signal whoever started the process ignores (a
    background job's SIGINT, `trap '' INT`) stays ignored; a handler that was not set from Python (`getsignal`
    is None) cannot be put back, so its signal is left alone too."""
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (None, signal.SIG_IGN)]
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, was in previous.items():
            signal.signal(s, was if afterwards is None else afterwards(was))


_ENDS_THE_PROCESS = False  # set by the command line run as the process's own command (`command_ends_the_process`)
INTERRUPTED = 130  # a command's status when Ctrl-C or SIGTERM stopped it, as shells count it


def _end_interrupted(signum: int, frame: object) -> None:
    """A signal after an interrupted command has said so: its output flushed, the process ends with the
    command's status. A Python handler, not SIG_DFL: a signal already pending when the handler changes
    would otherwise be reported as ignored "due to race condition"."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # closed, or the reader gone
            stream.flush()
    os._exit(INTERRUPTED)


def command_ends_the_process() -> None:
    """The command line is the process's own command (the console script, `python -m`): nothing of ours runs
    after it. Then, once a command has been interrupted, a later signal ends the process as by default,
    silently (`interrupted_once`), instead of raising KeyboardInterrupt where nothing catches it."""
    global _ENDS_THE_PROCESS
    _ENDS_THE_PROCESS = True


class Interruption:
    """Ctrl-C or SIGTERM unwinds the block as KeyboardInterrupt, once (`interrupted_once`)."""

    def __init__(self) -> None:
        self.happened = False  # and maybe turned into a library's own error (DuckDB's "Query interrupted")
        self.signalled = False  # a signal came (`happened` is also set when the block is over: `close`)
        self._signum = signal.SIGINT
        self._again: threading.Timer | None = None  # a signal to give again (`unraisable`)
        self._closed, self._lock = False, threading.Lock()

    def _give_again(self) -> None:
        with self._lock:
            if not self._closed:
                _thread.interrupt_main(self._signum)

    def close(self) -> None:
        """The block is over: a signal given again now would land past every handler (a traceback after the
        command has finished), so none is, and one still pending is ignored (`happened`)."""
        with self._lock:
            self._closed = self.happened = True
        if self._again is not None:
            self._again.cancel()
            self._again.join()

    def handler(self, signum: int, frame: object) -> None:
        self.signalled = True
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
                self._again = threading.Timer(0.01, self._give_again)
                self._again.daemon = True
                self._again.start()
            else:
                hook(unraisable)

        return redeliver


@contextmanager
def interrupted_once() -> Iterator[Interruption]:
    """Ctrl-C or SIGTERM (a job runner stopping a command) unwinds the block as KeyboardInterrupt, so what
    it made is cleaned up (by default SIGTERM would end the process where it stands and leave it all).
    Later signals are ignored while that clean-up runs: raised in the middle of it, one cut it short (a
    folder left, a traceback from a finalizer it landed in). The clean-up must be bounded; SIGKILL still
    ends the process.

    After an interruption, the handlers the signals had are put back, but for the process's own command
    (`command_ends_the_process`): there one more Ctrl-C (a key held down, a job runner's second SIGTERM) came
    after the command had said it was interrupted, and Python's handler raised it in the interpreter's
    shutdown or in the return to it, a traceback after the command's last line. There such a signal ends the
    process at once with the command's own status (`_end_interrupted`)."""
    state = Interruption()
    hook = sys.unraisablehook
    sys.unraisablehook = state.unraisable(hook)

    def afterwards(had: Any) -> Any:
        return _end_interrupted if state.signalled and _ENDS_THE_PROCESS else had

    try:
        with signals_to(state.handler, afterwards):
            try:
                yield state
            finally:
                state.close()  # while the handler is still this one
    finally:
        sys.unraisablehook = hook
