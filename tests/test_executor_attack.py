"""Attacks on the screen's ProcessPoolExecutor workers (workers.py, run.screen, command.cmd_screen: 117a2e3, e5a1147).

The command runs in a session of its own with a TMPDIR of the test's, from a script that stages a moment: at that
moment the process that reaches it first (a worker, or the screen process) writes a mark, with its pid, and waits
there; the test then kills a worker or signals the command, and holds it to its exit status, its last line, no
traceback, no process of its session left, and no partitions left in TMPDIR. A forked worker inherits what the
script patched. Tests under "faults" failed on e5a1147, each with its cause in the docstring, and pass since the fix
that followed it; the rest held and are kept as regression tests."""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from test_fork_attack import DIRS, _children, _failing_export, _gone, _kill_group, _own_tmp

from cds_service.screening import run, workers
from cds_service.screening.bulk import ExportFileError
from cds_service.settings import REPO_ROOT

BROKEN = "screen: a worker process ended abruptly (killed, out of memory, or failed to start); nothing was written"
INTERRUPTED = "screen: interrupted; the outputs in OUT may be incomplete"

# The command, with a stage where the first process to reach it writes its pid to $XA_MARK and waits there.
# route: a worker routing a span; idle: the screen process between routing and evaluation (the workers idle);
# evaluate: a worker starting on a partition; send: a worker about to send a partition's rows back, which first
# stops the screen process (SIGSTOP), so that the rows (about 150 kB, more than a pipe holds) are still being
# sent when the test acts; done: the screen process with every result in, its workers not yet closed; output:
# the screen process writing the outputs (its workers gone).
STAGED = """
import os, signal, sys, time
from pathlib import Path
from cds_service.screening import command, run

stage, mark = os.environ["XA_STAGE"], Path(os.environ["XA_MARK"])

def reached(name):
    if name != stage:
        return False
    tmp = mark.with_name(f"{mark.name}.{os.getpid()}")
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, mark)  # the first process here only
    except FileExistsError:
        return False
    return True

def hold(name, seconds=3.0):
    if reached(name):
        time.sleep(seconds)

real_route_span, real_partition = run.route_span, run.screen_partition
def route_span(job):
    hold("route")
    return real_route_span(job)
def screen_partition(job):
    hold("evaluate")
    rows = real_partition(job)
    if reached("send"):
        os.kill(os.getppid(), signal.SIGSTOP)
    return rows
run.route_span, run.screen_partition = route_span, screen_partition

real_recheck = run.recheck_across
def recheck_across(*args):
    hold("idle")
    return real_recheck(*args)
run.recheck_across = recheck_across

real_peak = run.peak_rss_mb
def peak_rss_mb():
    hold("done", 1.0)
    return real_peak()
run.peak_rss_mb = peak_rss_mb

real_write = command.write_all
def write_all(*args):
    hold("output")
    return real_write(*args)
command.write_all = write_all

from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.fixture(scope="module")
def big_export(tmp_path_factory) -> Path:
    """1500 patients of 60 resources, one in three with SLE (48 MB): about 1.5 s on two workers; a partition's rows
    come back in 130-170 kB, more than a pipe holds."""
    from bench.screen import write_export

    folder = tmp_path_factory.mktemp("export")
    write_export(folder, 1500, 60, 3)
    return folder


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "gone"


def _until(check, seconds: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Staged:
    """The command on `export`, in a session of its own, staged at `stage`."""

    def __init__(self, tmp_path: Path, export: Path, stage: str, workers: int = 2) -> None:
        self.tmp, self.out, self.mark = tmp_path / "tmp", tmp_path / "out", tmp_path / "mark"
        argv = [sys.executable, "-c", STAGED, "screen", str(export), "--workers", str(workers), "--as-of",
                "2026-11-23", "--out", str(self.out), "--no-store"]  # fmt: skip
        env = {**_own_tmp(tmp_path), "XA_STAGE": stage, "XA_MARK": str(self.mark)}
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=env)  # fmt: skip
        self.err = ""

    def reached(self) -> int:
        """The pid of the process at the stage, once one is there."""
        assert _until(lambda: self.mark.exists() or self.proc.poll() is not None), "the stage was never reached"
        assert self.mark.exists(), f"the command ended first: {self.proc.communicate()[1].decode()[-3000:]}"
        return int(self.mark.read_text())

    def sending(self) -> int:
        """At stage "send", the screen process paused: a worker, once it is plain that none is stuck writing its
        rows into the pipe the paused process reads (a result is a file's name now, which the pipe takes whole;
        on 117a2e3 a worker sat there with 130-170 kB of rows)."""
        self.reached()
        assert _until(lambda: _state(self.proc.pid) == "T"), "the screen process was never paused"
        time.sleep(1.0)  # the workers finish what they hold and go idle, or block
        writing = [w for w in self.workers() if _wchan(w).endswith("pipe_write")]
        assert writing == [], f"workers blocked writing a result into the pipe: {writing}"
        return self.workers()[0]

    def workers(self) -> list[int]:
        return _children(self.proc.pid)

    def end(self, seconds: float = 20.0) -> int | None:
        """The exit status, or None when the command had not ended `seconds` later (then it is killed)."""
        try:
            _, err = self.proc.communicate(timeout=seconds)
            self.err = err.decode()
            return self.proc.returncode
        except subprocess.TimeoutExpired:
            threads = {t: _wchan(int(t)) for t in os.listdir(f"/proc/{self.proc.pid}/task")}
            self.err = f"(hung: killed after {seconds} s; its threads wait in {threads})"
            return None
        finally:
            _kill_group(self.proc)

    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""

    def left(self) -> tuple[list[int], list[str]]:
        """Processes of the command's session still alive, and its partitions folders left in TMPDIR."""
        return _gone(self.proc.pid), [p.name for p in self.tmp.glob("screen-*")]


def _ends(staged: Staged, status: int, line: str) -> None:
    code = staged.end()
    assert code == status, f"status {code}: {staged.err[-3000:]}"
    assert staged.last_line() == line, staged.err[-3000:]
    assert "Traceback" not in staged.err, staged.err[-3000:]
    assert staged.left() == ([], []), "processes or partitions left behind"


# --- faults ----------------------------------------------------------------------------------------------------


def test_a_worker_killed_while_sending_its_rows_stops_the_screen(big_export, tmp_path):
    """Was a fault in 117a2e3, fixed by results sent as a file's name (`workers._to_file`). The executor only half
    fixed the hang 117a2e3 is about. A worker killed (the out-of-memory killer) while it writes a partition's rows
    into the result pipe leaves a partial message there: the executor's manager thread, which has read the header,
    waits in `recv()` for the rest for ever; no end-of-file comes, since this process holds the pipe's write end
    itself. It never marks the pool broken, so the command waits for ever, as before, and Ctrl-C cannot end it
    either (`stop` joins that thread). Rows of a partition are 130-170 kB here (MBs on a large export), more than a
    pipe holds, so the write takes several reads; the screen process is paused here only to hold that moment open."""
    staged = Staged(tmp_path, big_export, "send")
    try:
        worker = staged.sending()
        os.kill(worker, signal.SIGKILL)
        assert _until(lambda: _state(worker) in ("Z", "gone"))
        os.kill(staged.proc.pid, signal.SIGCONT)
        code = staged.end()
        # 2 when the dead worker had work left (the screen is incomplete), 0 when every result was in
        assert (code, staged.last_line()) in ((2, BROKEN), (0, staged.last_line())), staged.err[-3000:]
        assert code == 2 or (staged.out / "patients.csv").exists(), staged.err[-3000:]
        assert "Traceback" not in staged.err, staged.err[-3000:]
        assert staged.left() == ([], []), "processes or partitions left behind"
    finally:
        _kill_group(staged.proc)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_while_a_worker_sends_its_rows_ends_the_screen(how, big_export, tmp_path):
    """Was a fault in 117a2e3, fixed by results sent as a file's name (`workers._to_file`). The same hang, made by
    `Workers.stop` itself: Ctrl-C or a job runner's SIGTERM while a worker is writing its rows back (a moment that
    recurs all through the evaluation). `stop` terminates that worker mid-message, then `shutdown(wait=True)` joins
    the manager thread, which waits in `recv()` for the rest of the message for ever. The command never ends (a
    second SIGTERM leaves `stop`, the third reaches `cmd_screen`, and the interpreter's exit then joins the same
    thread): only SIGKILL ends it, leaving its partitions in /tmp. Not staged at all: 2 of 70 SIGTERMs sent at
    random moments of the plain command's evaluation of this export hung it. Here the worker is also frozen
    mid-write, so that `stop`, not the worker, ends its write (without that, 3 runs in 4 hung). A first draft of
    this file's `Workers` tests hung the test run itself the same way: `stop` in a fixture's teardown, 100 kB
    results in flight."""
    staged = Staged(tmp_path, big_export, "send")
    try:
        worker = staged.sending()
        os.kill(worker, signal.SIGSTOP)  # it writes no more of its rows until `stop` ends it
        if how == "ctrl-c":
            os.killpg(staged.proc.pid, signal.SIGINT)
        else:
            os.kill(staged.proc.pid, signal.SIGTERM)
        os.kill(staged.proc.pid, signal.SIGCONT)
        _ends(staged, 130, INTERRUPTED)
    finally:
        _kill_group(staged.proc)


def test_unordered_lets_go_of_each_result_once_given(tmp_path):
    """Was a fault, fixed. `Workers.unordered` keeps the list of every Future it submitted until the last one is read
    (for the `finally` that cancels), and a Future holds its result: every result it has already yielded stays in
    memory. `multiprocessing.Pool.imap_unordered` dropped each as it was taken (`as_completed` itself is careful
    to). Fix: drop each future from the list as it is yielded (or cancel through a set of the pending ones)."""
    got = _workers_case(
        tmp_path,
        """
held = []
given = []
for result in pool.unordered(payload, [1000] * 6):
    given.append(weakref.ref(result))
    del result
    gc.collect()
    held.append(sum(ref() is not None for ref in given[:-1]))
report(held=held)
""",
    )
    assert got["held"] == [0] * 6, f"earlier results still held after each of the six: {got['held']}"


def test_the_screen_process_holds_no_partitions_rows_once_kept(catalog, as_of, tmp_path, monkeypatch):
    """Was a fault, fixed. What the last test finds, in the screen: `rows.Rows` spools the rows to disk so that the
    screen process does not grow with the export (475 MiB for 100,000 patients, its docstring says), but every
    partition's rows stay referenced by their Future until the last partition is in. Measured with `run.screen` on
    40,000 patients all inside the cohort (200,000 rows, 2 workers): peak 193 MiB on c2be3d9, 280 MiB on e5a1147;
    here, with rows spooled past 500, what Python has allocated grows by each partition's rows (about 2 MB each)
    instead of staying flat (as on c2be3d9: 12-15 MiB whatever the partition)."""
    from bench.screen import write_export
    from cds_service.screening import rows

    folder = tmp_path / "export"
    folder.mkdir()
    write_export(folder, 3000, 12, 1)  # every patient inside: 15,000 rows, from the workers
    monkeypatch.setattr(rows, "HELD", 500)
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    allocated: list[int] = []

    def progress(n: int) -> None:
        gc.collect()
        allocated.append(tracemalloc.get_traced_memory()[0])

    with run.worker_pool(2, catalog) as pool:  # forked before tracing starts: the workers do not trace
        tracemalloc.start()
        try:
            got = run.screen(folder, DIRS, as_of, workers=2, catalog=catalog, pool=pool, progress=progress)
        finally:
            tracemalloc.stop()
    assert len(got.rows) == 15_000 and len(allocated) > 4
    grown = (allocated[-1] - allocated[1]) / 2**20
    assert grown < 3, f"the screen process grew by {grown:.1f} MiB over {len(allocated) - 2} partitions' rows"


# The command, with the second fork failing as fork fails on a machine out of processes or memory (EAGAIN).
FORK_FAILS = """
import os, sys
forks = [0]
real_fork = os.fork
def fork():
    forks[0] += 1
    if forks[0] == 2:
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return real_fork()
os.fork = fork
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


def test_a_worker_that_cannot_be_forked_ends_the_command(big_export, tmp_path):
    """Was a fault (not new: c2be3d9 hung here too, its Pool's clean-up SIGTERM meeting a worker that still had the
    command's SIGTERM handler). `workers.start` forks through `executor.submit(int)`; when a fork fails (EAGAIN: the
    machine is out of processes or memory, when a screen is most likely to meet it) the executor is dropped with the
    workers it had already forked waiting for tasks, none stopped. The command says `cannot write the results to OUT
    (BlockingIOError)` (not the cause), then never exits: `multiprocessing` joins those non-daemon workers at exit,
    and they wait for ever. Fix: in `start`, on an exception from that submit, terminate and join what `_processes`
    holds and shut the executor down; in `cmd_screen`, say the workers could not be started."""
    proc = subprocess.Popen([sys.executable, "-c", FORK_FAILS, "screen", str(big_export), "--workers", "2",
                             "--as-of", "2026-11-23", "--out", str(tmp_path / "out"), "--no-store"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=_own_tmp(tmp_path))  # fmt: skip
    try:
        try:
            _, err = proc.communicate(timeout=20)
            text = err.decode()
        except subprocess.TimeoutExpired:
            workers_left = _children(proc.pid)
            text = f"(hung: killed after 20 s, waiting in {_wchan(proc.pid)} for its workers {workers_left})"
        assert proc.returncode == 2, text[-3000:]
        assert "cannot write the results" not in text, text[-3000:]
        assert _gone(proc.pid) == []
    finally:
        _kill_group(proc)


# The command with spawned workers (as from a process running another thread), and the catalogue's folder `argv[1]`
# removed once the screen process has loaded it (a deploy replacing it, a cleanup).
VANISHING = """
import shutil, sys
from cds_service.eligibility.catalog import Catalog
from cds_service.screening import command, workers

class Vanishing(Catalog):
    @classmethod
    def load(cls, *args, **kwargs):
        catalog = Catalog.load(*args, **kwargs)
        shutil.rmtree(sys.argv[1])
        return catalog

workers._threads = lambda: 2
command.Catalog = Vanishing
from cds_service.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _vanishing(tmp_path: Path, export: Path, gone: str) -> subprocess.CompletedProcess:
    catalogue = tmp_path / "catalogue"
    shutil.copytree(DIRS[0], catalogue / "mappings")
    shutil.copytree(DIRS[1], catalogue / "trials")
    env = {**_own_tmp(tmp_path), "TRIAL_MATCHER_MAPPINGS_DIR": str(catalogue / "mappings"),
           "TRIAL_MATCHER_TRIALS_DIR": str(catalogue / "trials")}  # fmt: skip
    argv = [sys.executable, "-c", VANISHING, str(catalogue / gone), "screen", str(export), "--workers", "2",
            "--as-of", "2026-11-23", "--out", str(tmp_path / "out"), "--no-store"]  # fmt: skip
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_a_spawned_worker_that_fails_to_start_is_one_line(big_export, tmp_path):
    """Was a fault (minor), fixed. A spawned worker whose catalogue cannot load (its mappings folder gone) ends the
    command with e5a1147's line and status 2, but the worker's traceback comes first: the executor logs `Exception
    in initializer:` with the whole traceback (logging's last-resort handler, stderr), where every other error of
    the command is one line, and the line itself does not say why. Fix: catch in `run._init` and report the cause in
    one line (a file named, as for the export's files), or exit the worker quietly with a status the parent reads."""
    done = _vanishing(tmp_path, big_export, "mappings")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == BROKEN
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_spawned_workers_screen_with_the_screen_process_catalogue_or_stop(big_export, tmp_path):
    """Was a fault, fixed (of the spawned path, older than 117a2e3; e5a1147 names the case). A spawned worker loads the
    catalogue again from its folders (`Catalog.source`) after the screen process did; `Catalog.load` of a trials
    folder that is gone loads no trial, without a word. So the workers screen the export's 500 SLE patients against
    nothing, and the command exits 0 with funnel counts of 1000 per trial out of 1500 patients: those 500 have no
    row. A trial file edited during the screen likewise gives rows of two versions. Fix: have `_init` check what it
    loaded against the screen process's catalogue (trial ids and a digest of the files, passed in `initargs`) and
    raise when they differ, or refuse a trials folder with no trial."""
    done = _vanishing(tmp_path, big_export, "trials")
    patients = tmp_path / "out" / "patients.csv"
    if done.returncode == 0:
        screened = {line.split(",")[0] for line in patients.read_text().splitlines()[1:]}
        assert len(screened) == 1500, f"{1500 - len(screened)} patients have no row, and the command exited 0"
    else:
        assert done.returncode == 2 and not patients.exists(), done.stderr[-3000:]


# --- held: a worker killed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "victims", "count"),
    [
        ("route", "busy", 2),  # routing a span
        ("route", "all", 2),
        ("idle", "one", 2),  # idle between tasks, while the screen process routes what was left unparsed
        ("idle", "all", 2),
        ("evaluate", "busy", 2),
        ("evaluate", "all", 2),
        ("evaluate", "busy", 1),  # the only worker
    ],
)
def test_a_worker_killed_at_any_moment_ends_the_screen_in_one_line(stage, victims, count, big_export, tmp_path):
    staged = Staged(tmp_path, big_export, stage, workers=count)
    try:
        at = staged.reached()
        alive = staged.workers()
        assert len(alive) == count, alive
        kill = {"busy": [at], "one": alive[:1], "all": alive}[victims]
        for pid in kill:
            os.kill(pid, signal.SIGKILL)
        _ends(staged, 2, BROKEN)
        assert not (staged.out / "patients.csv").exists()
    finally:
        _kill_group(staged.proc)


def test_a_worker_killed_after_the_last_result_loses_nothing(big_export, tmp_path):
    """Every partition's rows are in when the workers die: the screen is whole, and ends as it would have."""
    staged = Staged(tmp_path, big_export, "done")
    try:
        staged.reached()
        for pid in staged.workers():
            os.kill(pid, signal.SIGKILL)
        code = staged.end()
        assert code == 0, staged.err[-3000:]
        assert (staged.out / "patients.csv").is_file()
        assert staged.left() == ([], [])
    finally:
        _kill_group(staged.proc)


# --- held: Ctrl-C and SIGTERM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "stage"),
    [("sigterm", s) for s in ("route", "idle", "evaluate", "done", "output")]
    + [("ctrl-c", s) for s in ("route", "evaluate", "output")],  # with idle workers: see the fault below
)
def test_interrupted_at_any_moment_ends_in_one_line(how, stage, big_export, tmp_path):
    """SIGTERM to the screen process alone (a job runner's) at any moment; Ctrl-C (SIGINT to the whole session) with
    the workers busy, or gone."""
    staged = Staged(tmp_path, big_export, stage)
    try:
        staged.reached()
        if how == "ctrl-c":
            os.killpg(staged.proc.pid, signal.SIGINT)
        else:
            os.kill(staged.proc.pid, signal.SIGTERM)
        _ends(staged, 130, INTERRUPTED)
    finally:
        _kill_group(staged.proc)


def test_ctrl_c_with_the_workers_idle_ends_in_one_line(big_export, tmp_path):
    """Was a fault, fixed (older than 117a2e3: c2be3d9's Pool workers print the same). Ctrl-C reaches the workers too,
    and `run._adopt` gives a forked worker Python's SIGINT handler. A busy worker's KeyboardInterrupt is its task's
    result; an idle one's is raised in the executor's `call_queue.get`, outside any task, so the worker dies
    printing `Process ForkProcess-N:` and a traceback, before the command's one line. Here every result is in and
    the workers wait to be closed (the same happens while the screen process routes alone, stage "idle": about one
    run in two there, as `stop` may end the workers first). Fix: ignore SIGINT in the workers (the screen process,
    which gets Ctrl-C too, stops them with SIGTERM), in `_adopt` for both start methods."""
    staged = Staged(tmp_path, big_export, "done")
    try:
        staged.reached()
        os.killpg(staged.proc.pid, signal.SIGINT)
        _ends(staged, 130, INTERRUPTED)
    finally:
        _kill_group(staged.proc)


# A truncated .gz fails the screen while a worker still routes (slowly) a span: `stop` runs, and SIGTERM (a job
# runner's) arrives in the middle of it, once or several times.
TERM_IN_STOP = """
import os, signal, sys, threading, time
from concurrent.futures import ProcessPoolExecutor
from cds_service.screening import run

real_route = run.route
def route(spans, *rest):
    if spans[0].path.name.startswith("Observation.000"):
        time.sleep(2)
    return real_route(spans, *rest)
run.route = route

times, sent = int(os.environ["XA_TERMS"]), []
real_shutdown = ProcessPoolExecutor.shutdown
def shutdown(self, *args, **kwargs):
    if kwargs.get("cancel_futures") and not sent:  # the first Workers.stop's
        sent.append(True)
        def terms():
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.002)
        threading.Thread(target=terms).start()
        time.sleep(0.001)
    return real_shutdown(self, *args, **kwargs)
ProcessPoolExecutor.shutdown = shutdown
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.mark.parametrize("terms", [1, 2])
def test_sigterm_while_the_workers_are_being_stopped(terms, as_of, tmp_path):
    folder = _failing_export(tmp_path / "export", as_of)
    argv = [sys.executable, "-c", TERM_IN_STOP, "screen", str(folder), "--workers", "2", "--as-of", "2026-11-23",
            "--out", str(tmp_path / "out"), "--no-store"]  # fmt: skip
    env = {**_own_tmp(tmp_path), "XA_TERMS": str(terms)}
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=20)
        text = err.decode()
        # the file's error, or interrupted: both one line. A second SIGTERM during the clean-up is ignored; one
        # that comes after the command has cleaned up and said so (the sender thread is late) ends it by default
        assert proc.returncode in (2, 130) or (terms == 2 and proc.returncode == -signal.SIGTERM), text[-3000:]
        # its last words (a second SIGTERM that lands in the progress bar's exit leaves its line unended: cosmetic)
        assert text.rstrip().endswith((INTERRUPTED, "cannot be read")), text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert _gone(proc.pid) == []
        assert not list((tmp_path / "tmp").glob("screen-*")), "the partitions were left behind"
    finally:
        _kill_group(proc)


# --- held: Workers ------------------------------------------------------------------------------------------------

# A fresh interpreter with two forked workers (`pool`), so that a `stop` that hangs hangs no test run; the case's
# code follows, and `report` prints what it found. The workers are stopped whatever happens.
WORKERS = """
import gc, json, os, signal, sys, time, weakref
import multiprocessing as mp
from cds_service.screening import workers

def _sigterm_default():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

class Payload:
    def __init__(self, size):
        self.data = bytes(size)

def payload(size):
    return Payload(size)

def until(check, seconds=10):
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()

def timed(*calls):
    start = time.monotonic()
    for call in calls:
        call()
    return time.monotonic() - start

def refused():
    try:
        pool.submit(int)
    except (RuntimeError, workers.BrokenProcessPool) as e:
        return type(e).__name__
    return None

def report(**found):
    print(json.dumps({**found, "children": len(mp.active_children())}), flush=True)

workers._threads = lambda: 1
pool = workers.start(2, (_sigterm_default, ()), "no spawning here")
assert pool.method == "fork"
try:
    exec(sys.argv[1])
finally:
    pool.stop()
"""


def _workers_case(tmp_path: Path, code: str) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", WORKERS, code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env=_own_tmp(tmp_path))  # fmt: skip
    try:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert _gone(proc.pid) == []
        return json.loads(out.decode().strip().splitlines()[-1])
    finally:
        _kill_group(proc)


def test_stop_is_prompt_with_tasks_running_and_queued_and_can_be_repeated(tmp_path):
    got = _workers_case(
        tmp_path,
        """
futures = [pool.submit(time.sleep, 5) for _ in range(20)]
running = until(lambda: sum(f.running() for f in futures) >= 2)
first = timed(pool.stop)
done = all(f.done() for f in futures)
alive = len(mp.active_children())
again = timed(pool.stop, pool.close, pool.stop)
report(running=running, first=first, done=done, alive=alive, again=again, refused=refused())
""",
    )
    assert got["running"] and got["done"] and got["alive"] == 0 and got["children"] == 0, got
    assert got["first"] < 3 and got["again"] < 1, got
    assert got["refused"] in ("RuntimeError", "BrokenProcessPool"), got  # shut down, or broken by its stop


def test_stop_on_a_pool_a_dead_worker_broke(tmp_path):
    got = _workers_case(
        tmp_path,
        """
os.kill(pool.call(os.getpid), signal.SIGKILL)
try:
    pool.submit(time.sleep, 5).result(timeout=10)
    broke = None
except workers.BrokenProcessPool:
    broke = "BrokenProcessPool"
took = timed(pool.stop, pool.stop)
report(broke=broke, took=took, refused=refused())
""",
    )
    assert got["broke"] == got["refused"] == "BrokenProcessPool" and got["took"] < 3 and got["children"] == 0, got


def test_stop_after_close(tmp_path):
    got = _workers_case(
        tmp_path,
        """
three = pool.call(sum, [1, 2])
pool.close()
report(three=three, took=timed(pool.stop))
""",
    )
    assert got["three"] == 3 and got["took"] < 1 and got["children"] == 0, got


def test_an_abandoned_unordered_drops_what_no_worker_has_taken(tmp_path):
    """Closing the generator early cancels every task still queued in this process; at most one per worker and
    the executor's one extra call already handed to the workers' queue still run."""
    got = _workers_case(
        tmp_path,
        """
results = pool.unordered(time.sleep, [0.3] * 20)
next(results)
results.close()
report(took=timed(pool.close))
""",
    )
    assert got["took"] < 2.5 and got["children"] == 0, got  # the 20 tasks would take 3 s on two workers


def test_the_callers_pool_after_a_failed_screen_is_stopped_and_says_so(catalog, as_of, tmp_path, monkeypatch):
    """`screen` stops the caller's pool when it fails (its docstring says so): no worker is left, and using the pool
    again raises at once instead of hanging."""
    folder = _failing_export(tmp_path / "export", as_of)
    monkeypatch.setattr(workers, "_threads", lambda: 1)
    with run.worker_pool(2, catalog) as pool:
        with pytest.raises(ExportFileError):
            run.screen(folder, DIRS, as_of, workers=2, catalog=catalog, pool=pool)
        assert mp.active_children() == []
        with pytest.raises((RuntimeError, workers.BrokenProcessPool)):
            pool.submit(int)
