"""Attacks on fafb2df (interrupts.interrupts_held, remove_folder, scratch_folder; Workers.stop/_kill/close; the `screen`
command's `_interrupted_once` and `_said`) and a130717 (each worker's `_watch` thread, ending it once its parent is
gone).

Each command case runs `screen` in a session of its own with a TMPDIR of the test's, from a `-c` script that stages
one moment (the way tests/test_executor_attack.py does), and holds it to its exit status, its last line, no
traceback, no process of its session left and no work folder left in TMPDIR.

Faults (failed on 0d4c504 and pass since the fix that followed it, which moved `_interrupted_once` to
`interrupts.interrupted_once`; each docstring says what a user sees, the cause and how it was found):
- test_a_ctrl_c_the_invoker_ignores_stays_ignored
- test_a_signal_while_the_workers_are_forked_ends_the_command[1] and [2]
- test_a_signal_during_the_parquet_conversion_is_one_line
- test_a_first_signal_lost_in_a_finalizer_does_not_make_the_command_unstoppable[close] and [fork]
- test_ctrl_c_reaching_a_worker_as_it_starts_prints_no_traceback

Held (kept as regression tests):
- test_a_held_sigterm_with_the_default_handler_still_ends_the_process
- test_nested_holds_deliver_the_signal_once_after_the_outer_one
- test_a_hold_off_the_main_thread_runs_the_block_and_leaves_the_handlers
- test_repeated_signals_during_evaluation_end_in_one_line[ctrl-c] and [sigterm]
- test_workers_end_when_their_screen_is_killed_under_a_subreaper
- test_the_watch_ends_no_live_parents_worker
- test_kill_of_workers_already_reaped_returns_at_once
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_executor_attack import STAGED, _until, _wchan, _workers_case
from test_fork_attack import _children, _gone, _kill_group, _own_tmp
from test_interrupted_cleanup import _raising, _work
from test_worker_pool import ORPHANS

from cds_service import interrupts, scratch
from cds_service.settings import REPO_ROOT

INTERRUPTED = "screen: interrupted; the outputs in OUT may be incomplete"
ARGS = ["--workers", "2", "--as-of", "2026-11-23", "--no-store"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """1500 patients of 60 resources, one in three with SLE: about 1.5 s on two workers."""
    from bench.screen import write_export

    folder = tmp_path_factory.mktemp("export")
    write_export(folder, 1500, 60, 3)
    return folder


class Command:
    """`screen export` run by `script` in a session of its own, with TMPDIR, OUT and a mark file of the test's."""

    def __init__(self, tmp_path: Path, script: str, export: Path, env: dict[str, str] | None = None, **popen) -> None:  # noqa: ANN003
        self.tmp, self.out, self.mark = tmp_path / "tmp", tmp_path / "out", tmp_path / "mark"
        argv = [sys.executable, "-c", script, "screen", str(export), "--out", str(self.out), *ARGS]
        env = {**_own_tmp(tmp_path), "XA_MARK": str(self.mark), **(env or {})}
        self.errors = tmp_path / "stderr"
        with self.errors.open("wb") as err:  # a file, not a pipe: what a hung command said can be read
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True, env=env, **popen)  # fmt: skip
        self.err = ""

    def end(self, seconds: float = 20.0) -> int | None:
        """The exit status, or None when the command had not ended `seconds` later (then it is killed)."""
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
        finally:
            hung = self.proc.returncode is None
            waits = {t: _wchan(int(t)) for t in os.listdir(f"/proc/{self.proc.pid}/task")} if hung else {}
            workers = _children(self.proc.pid) if hung else []
            self.left_processes = _gone(self.proc.pid, 0 if hung else 5)
            _kill_group(self.proc)
            self.err = "\n".join(line for line in self.errors.read_text().splitlines() if "━" not in line)
            if hung:
                self.err += f"\n(hung: killed after {seconds} s; its threads wait in {waits}, its workers {workers})"

    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""

    def left_folders(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("screen-*"))


def _ends_interrupted(command: Command, seconds: float = 20.0) -> None:
    code = command.end(seconds)
    assert code == 130, f"status {code}: {command.err[-3000:]}"
    assert command.last_line() == INTERRUPTED, command.err[-3000:]
    assert "Traceback" not in command.err, command.err[-3000:]
    assert command.left_processes == [], "processes of the command left running"
    assert command.left_folders() == [], "work folders left in TMPDIR"


# --- faults ----------------------------------------------------------------------------------------------------


def test_a_ctrl_c_the_invoker_ignores_stays_ignored(export, tmp_path):
    """Fault, new in fafb2df. A screen started with SIGINT ignored (a background job of a shell script, `cmd &`: the
    shell ignores SIGINT in it so that Ctrl-C on the script's foreground work does not reach it; or `trap '' INT`)
    is stopped by Ctrl-C: `screen: interrupted`, status 130, the night's screen lost. Python keeps an ignored SIGINT
    ignored, and so did e5d9853 (its `_terminate_as_interrupt` set SIGTERM only; checked on a `git archive` of it:
    the screen ran to the end). `_interrupted_once` now points SIGINT at its handler whatever it was:
    `interrupts.signals_to` (runtime.py:82, fafb2df had the same line in command.py) skips only handlers not set from
    Python (None), not SIG_IGN. Found by starting the command with SIGINT ignored and sending SIGINT to its group
    while a worker evaluates. Fix: leave a signal whose handler is SIG_IGN alone in `_interrupted_once` (and
    `signals_to`), as `interrupts_held` rightly does already (it puts SIG_IGN back)."""
    command = Command(tmp_path, STAGED, export, {"XA_STAGE": "evaluate"},
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    try:
        assert _until(lambda: command.mark.exists() or command.proc.poll() is not None)
        assert command.mark.exists(), "the stage was never reached"
        os.killpg(command.proc.pid, signal.SIGINT)
        code = command.end()
        assert code == 0, f"an ignored Ctrl-C stopped the screen: status {code}: {command.err[-2000:]}"
        assert (command.out / "patients.csv").is_file()
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


# The command with Ctrl-C (SIGINT to itself) just before the XA_AT-th fork of a worker: before the first, or with
# one worker forked already.
FORKING = """
import os, signal, sys
forks, real_fork = [0], os.fork
def fork():
    forks[0] += 1
    if forks[0] == int(os.environ["XA_AT"]):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the workers are forked
    return real_fork()
os.fork = fork
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.mark.parametrize("at", ["1", "2"])
def test_a_signal_while_the_workers_are_forked_ends_the_command(at, export, tmp_path):
    """Fault (the signal handling fafb2df set out to make whole; `workers.start` is older). Ctrl-C, or a job runner's
    SIGTERM (the same KeyboardInterrupt now), while `workers.start` forks the workers (`executor.submit(int)`,
    workers.py:133): the KeyboardInterrupt goes through `except Exception` (workers.py:134), so the pool is neither
    stopped nor returned to the `with` that would stop it. With one worker forked ([2]) the command says
    `screen: interrupted` and then never exits: multiprocessing's exit handler joins that non-daemon worker, which
    waits for tasks for ever (its parent lives on, so a130717's watch does not end it either); a job runner then
    SIGKILLs it. With none forked yet ([1]) it exits 130 but leaves its `screen-results-*` folder in TMPDIR (the next
    screen's sweep, 7e75a09, removes it). Found by staging the signal in a patched `os.fork`. Fix: fork the workers
    inside `interrupts.interrupts_held()` (the signal then comes once `start` has returned the pool, inside the `with`
    that stops it; forked workers inherit the holding handler, which drops the signal until `_worker_signals`), or
    `except BaseException` there, stopping the pool and re-raising a KeyboardInterrupt as it is."""
    command = Command(tmp_path, FORKING, export, {"XA_AT": at})
    try:
        _ends_interrupted(command, 10)  # it takes about a second when it works
    finally:
        _kill_group(command.proc)


# The command with a SIGTERM (a job runner's) sent once DuckDB has started writing patients.parquet; the exception
# the query ended with, if any, is written to the mark file.
IN_PARQUET = r"""
import os, signal, sys, threading, time
from pathlib import Path
import duckdb
real_connect, mark = duckdb.connect, Path(os.environ["XA_MARK"])

class Connection:
    def __init__(self, con):
        self._con = con
    def __getattr__(self, name):
        return getattr(self._con, name)
    def execute(self, sql, params=()):
        if not sql.startswith("COPY"):
            return self._con.execute(sql, params)
        out = Path(params[2])
        def term():
            while not any(p.name.endswith(out.name) for p in out.parent.iterdir()):
                time.sleep(0.0005)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=term, daemon=True).start()
        try:
            return self._con.execute(sql, params)
        except BaseException as e:
            mark.write_text(f"{type(e).__name__}: {e}")
            raise

duckdb.connect = lambda *args, **kwargs: Connection(real_connect(*args, **kwargs))
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


def test_a_signal_during_the_parquet_conversion_is_one_line(export, tmp_path):
    """Fault. A job runner's SIGTERM (or Ctrl-C) while `write_all` converts patients.csv to Parquet (80-125 ms of a
    5,000- or 20,000-patient screen here; seconds on a large one): `_interrupted_once`'s KeyboardInterrupt is raised
    inside DuckDB's query, which checks for signals as it runs and turns the exception into
    `RuntimeError: Query interrupted` (output.py:162). `_said` catches KeyboardInterrupt and OSError, not that, so
    the command prints a traceback and exits 1 (not 130) without its `interrupted` line, leaving patients.csv and
    patients.parquet in OUT but no funnel.csv or funnel.html. Found by sending SIGTERM from a thread once DuckDB had
    created the Parquet file (the mark holds `RuntimeError: Query interrupted`; checked by hand that
    `duckdb.execute` does this to any KeyboardInterrupt raised by a Python handler). Fix: in `_said`, once the
    first signal has come (let `_interrupted_once` say so), any exception is the interruption: say `interrupted`,
    return 130; or hold interrupts around the COPY (it is bounded by the rows)."""
    command = Command(tmp_path, IN_PARQUET, export)
    try:
        _ends_interrupted(command)
    finally:
        _kill_group(command.proc)


# The command with a job runner's first SIGTERM landing where Python cannot raise it: in a finalizer (a pipe's
# `Connection.__del__`, as `Workers.close` lets go of the executor's queues: the commit's own CI log met a signal
# there) or in an after-fork callback (as `logging._releaseLock` runs in the screen process after each fork; met by
# hand with Ctrl-C to the group as a worker starts). Its second SIGTERM comes as the outputs are written.
LOST = r"""
import os, signal, sys, threading
import multiprocessing.connection as connection
from cds_service.screening import command, workers

where, sent = os.environ["XA_WHERE"], []
def term_once():
    if not sent and threading.current_thread() is threading.main_thread():
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)

if where == "close":
    real_close, closing = workers.Workers.close, []
    def close(self):
        closing.append(True)
        return real_close(self)
    workers.Workers.close = close
    real_del = connection.Connection.__del__
    def __del__(self):
        if closing:
            term_once()
        real_del(self)
    connection.Connection.__del__ = __del__
else:
    os.register_at_fork(after_in_parent=term_once)

real_write = command.write_all
def write_all(*args):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_write(*args)
command.write_all = write_all
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.mark.parametrize("where", ["close", "fork"])
def test_a_first_signal_lost_in_a_finalizer_does_not_make_the_command_unstoppable(where, export, tmp_path):
    """Fault, new in fafb2df. `_interrupted_once`'s handler marks the command interrupted before it raises, and
    ignores every later signal from then on (command.py:97-101), whether or not its KeyboardInterrupt unwound
    anything. Raised inside a finalizer or an at-fork callback, it does not: Python prints `Exception ignored in:
    ... KeyboardInterrupt` and goes on. The screen then runs to its end deaf to SIGTERM and Ctrl-C: here it ignores
    the job runner's second SIGTERM too, writes the outputs and exits 0 with a traceback on stderr (a first signal
    lost early, as the workers are forked, leaves the whole screen, hours on a large export, stoppable by SIGKILL
    alone, which leaves its partitions). On e5d9853 the second signal stopped it. Found from the commit message (a
    second signal "could still land in a multiprocessing finalizer") and, by hand, a Ctrl-C swallowed in
    `logging._releaseLock` after a fork; staged here by sending the SIGTERM from within the finalizer or callback.
    Fix: within `_interrupted_once`, wrap `sys.unraisablehook` so that a KeyboardInterrupt it reports clears the
    flag (and is not printed); hold interrupts while forking (see the fork test) and while `close` lets go of the
    executor."""
    command = Command(tmp_path, LOST, export, {"XA_WHERE": where})
    try:
        code = command.end()
        assert code in (130, -signal.SIGTERM), f"two SIGTERMs, and the screen went on: status {code}"
        assert "Traceback" not in command.err, command.err[-3000:]
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


# The command with Ctrl-C reaching a worker (SIGINT to itself) as it starts the parent watch.
WORKER_START = """
import os, signal, sys, threading
screen, real_start = os.getpid(), threading.Thread.start
def start(self):
    if self.name == "screen-parent-watch" and os.getpid() != screen:
        os.kill(os.getpid(), signal.SIGINT)  # the worker's copy of a Ctrl-C to the session
    return real_start(self)
threading.Thread.start = start
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


def test_ctrl_c_reaching_a_worker_as_it_starts_prints_no_traceback(export, tmp_path):
    """Fault (an older window, made wider by a130717). Ctrl-C goes to the whole session; a worker just forked still
    has the screen process's handler (`_interrupted_once`'s; before fafb2df, Python's) until `run._worker_signals` sets
    SIG_IGN, and a130717 starts the watch thread before that (`_started`, workers.py:148-149). A Ctrl-C there raises
    KeyboardInterrupt in the worker's initializer: the executor logs `Exception in initializer:` with a traceback on
    stderr and the worker ends, so the command's own line is `a worker process ended abruptly (killed, out of
    memory...)`, not `interrupted`. Found by hand sending SIGINT to the group from a worker's thread start (three
    tracebacks: both workers', and the screen process's in `logging._releaseLock`, the finalizer test's case);
    staged here with the signal reaching the worker only. Fix: set the worker's signals before anything else in
    `_started` (or have the parent fork under `interrupts_held`, whose handler the children inherit and which only
    records the signal)."""
    command = Command(tmp_path, WORKER_START, export)
    try:
        code = command.end()
        assert "Traceback" not in command.err, command.err[-3000:]
        assert code in (0, 130), f"status {code}: {command.err[-3000:]}"
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


# --- held -----------------------------------------------------------------------------------------------------

# remove_folder with SIGTERM at its default, sent on the first file removed.
DEFAULT_TERM = """
import os, signal, sys
from pathlib import Path
from cds_service import scratch
folder, real_unlink, sent = Path(sys.argv[1]), os.unlink, []
def unlink(path, *args, **kwargs):
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
    return real_unlink(path, *args, **kwargs)
os.unlink = unlink
signal.signal(signal.SIGTERM, signal.SIG_DFL)
scratch.remove_folder(folder)
print("not ended", flush=True)
"""


def test_a_held_sigterm_with_the_default_handler_still_ends_the_process(tmp_path):
    """A SIGTERM held while a folder is removed reaches SIG_DFL afterwards and ends the process, the folder gone."""
    folder = _work(tmp_path / "work")
    done = subprocess.run([sys.executable, "-c", DEFAULT_TERM, str(folder)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30, env=_own_tmp(tmp_path), check=False)  # fmt: skip
    assert done.returncode == -signal.SIGTERM, done.stdout + done.stderr
    assert "not ended" not in done.stdout
    assert not folder.exists()


def test_nested_holds_deliver_the_signal_once_after_the_outer_one():
    previous = signal.signal(signal.SIGTERM, _raising)
    try:
        with pytest.raises(KeyboardInterrupt), interrupts.interrupts_held():
            with interrupts.interrupts_held():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            time.sleep(0.05)  # still held: the inner hold gave it to the outer one
            reached = True
        assert reached
        assert signal.getsignal(signal.SIGTERM) is _raising
        time.sleep(0.05)  # delivered once: no second KeyboardInterrupt here
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_hold_off_the_main_thread_runs_the_block_and_leaves_the_handlers(tmp_path):
    folder = _work(tmp_path / "work")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    failed: list[BaseException] = []

    def remove() -> None:
        try:
            scratch.remove_folder(folder)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            failed.append(e)

    thread = threading.Thread(target=remove)
    thread.start()
    thread.join(10)
    assert failed == [] and not folder.exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_repeated_signals_during_evaluation_end_in_one_line(how, export, tmp_path):
    """Five Ctrl-Cs to the whole session, or five SIGTERMs to the screen process, 10 ms apart, while a worker
    evaluates: one line, 130, nothing left."""
    command = Command(tmp_path, STAGED, export, {"XA_STAGE": "evaluate"})
    try:
        assert _until(lambda: command.mark.exists() or command.proc.poll() is not None)
        assert command.mark.exists(), "the stage was never reached"
        for _ in range(5):
            with_group = how == "ctrl-c"
            try:
                (os.killpg if with_group else os.kill)(
                    command.proc.pid, signal.SIGINT if with_group else signal.SIGTERM
                )
            except ProcessLookupError:
                break
            time.sleep(0.01)
        code = command.end()
        # a signal after the command has said so may end it by its default: -2 is 130 to a shell too
        assert code in (130, -signal.SIGINT, -signal.SIGTERM), f"status {code}: {command.err[-3000:]}"
        assert command.last_line() == INTERRUPTED, command.err[-3000:]
        assert "Traceback" not in command.err, command.err[-3000:]
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


# A subreaper that runs ORPHANS (a pool of two forked workers that prints their pids), SIGKILLs it, and prints the
# pids of the orphaned workers it reaps within 5 s.
SUBREAPER = """
import ctypes, os, signal, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
screen = subprocess.Popen([sys.executable, "-c", sys.argv[1], "fork"], stdout=subprocess.PIPE, text=True)
method, *pids = screen.stdout.readline().split()
pids = {int(p) for p in pids}
screen.kill()
screen.wait()
reaped, deadline = set(), time.monotonic() + 5
while pids - reaped and time.monotonic() < deadline:
    pid, _ = os.waitpid(-1, os.WNOHANG)
    reaped.add(pid) if pid else time.sleep(0.02)
print(len(pids), len(pids & reaped), flush=True)
for pid in pids - reaped:
    os.kill(pid, signal.SIGKILL)
"""


def test_workers_end_when_their_screen_is_killed_under_a_subreaper(tmp_path):
    """A screen run by a subreaper (systemd, a container's init, a job runner): its orphaned workers become the
    subreaper's children, not init's; `_watch` sees the parent change all the same and ends them."""
    done = subprocess.run([sys.executable, "-c", SUBREAPER, ORPHANS], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, env=_own_tmp(tmp_path), check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "2"], f"workers not ended under a subreaper: {done.stdout} {done.stderr}"


def test_the_watch_ends_no_live_parents_worker(tmp_path):
    """Idle past several of the watch's polls, the workers still serve, and end with status 0 when closed."""
    got = _workers_case(
        tmp_path,
        """
time.sleep(1.6)
three = pool.call(sum, [1, 2])
procs = list(pool._executor._processes.values())
pool.close()
report(three=three, codes=[p.exitcode for p in procs])
""",
    )
    assert got["three"] == 3 and got["codes"] == [0, 0] and got["children"] == 0, got


def test_kill_of_workers_already_reaped_returns_at_once(tmp_path):
    """`_kill` given workers a `close` has already reaped (the `stop` after a `close`) neither waits nor fails."""
    got = _workers_case(
        tmp_path,
        """
procs = list(pool._executor._processes.values())
pool.close()
took = timed(lambda: workers._kill(procs, 5.0))
report(took=took, alive=[p.is_alive() for p in procs])
""",
    )
    assert got["took"] < 0.5 and got["alive"] == [False, False] and got["children"] == 0, got
