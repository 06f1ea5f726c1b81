"""Attacks on 7e75a09/816d361 (scratch.Scratch, sweep, scratch_folder: work folders locked with flock while their
process lives, stale ones swept by the next screen) and 18f19b0 (interrupts.Interruption / interrupted_once: one
KeyboardInterrupt, a signal a finalizer swallowed given again from a timer; command._said and _failure).

Faults (failed on 816d361 and pass since the fix that followed it; each docstring says what a user sees, the cause,
how it was found and a fix):
- test_rows_iterated_without_the_rows_object_read_their_spilled_batches
- test_a_fifo_named_like_the_lock_does_not_hang_the_sweep
- test_a_scratch_folder_that_could_not_be_locked_is_not_left_for_ever
- test_a_signal_given_again_never_lands_after_the_command_has_finished

Held (kept as regression tests):
- test_a_live_screen_keeps_its_folders_while_another_screen_sweeps[fork] and [spawn]
- test_sweep_leaves_what_is_not_a_stale_folder_of_ours
- test_scratch_folders_made_and_swept_at_once_by_many_processes_are_never_lost
- test_many_screens_in_one_process_leak_no_descriptor_and_no_folder
- test_sigterm_to_the_whole_process_group_is_an_interruption_not_a_failure
- test_failure_messages_are_one_line_and_name_no_file_content
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from test_cleanup_attack import INTERRUPTED, Command, _until, export  # noqa: F401 - export: a fixture
from test_executor_attack import STAGED
from test_fork_attack import DIRS, _failing_export, _kill_group

from cds_service import scratch
from cds_service.settings import REPO_ROOT

PLAIN = "import sys\nfrom cds_service.cli import main\nsys.exit(main())  # as the console script calls it\n"


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch) -> Path:
    """$TMPDIR of the test's own, for this process's sweeps."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)
    return folder


def _run(script: str, tmp: Path, seconds: float = 10.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                          timeout=seconds, start_new_session=True)  # fmt: skip


# --- faults ----------------------------------------------------------------------------------------------------


def test_rows_iterated_without_the_rows_object_read_their_spilled_batches(own_tmpdir, monkeypatch):
    """Fault, new in 7e75a09's move of the spill folder to a Scratch removed by `weakref.finalize(self, ...)`
    (rows.py:106). A caller of `run.screen` that reads the rows straight off the result, `for row in
    screen(...).rows:` or `iter(result.rows)` after letting go of the result, gets FileNotFoundError
    (`.../screen-rows-XXXX/batch-000001.ndjson`) on its first row, once the screen had more than HELD rows (100,000:
    a few thousand patients): `Rows.__iter__` (rows.py:136-138) returns a `heapq.merge` of `_read(path)` generators that
    hold the paths but not the Rows, so the Rows is collected as soon as `iter()` returns, its finalizer removes the
    folder, and the files are opened only on the first `next`. Found by dropping the Rows right after `iter()` with
    HELD lowered. (`write_all` and `remember` hold the Screening, so the command itself does not meet it.) Fix: make
    `__iter__` a generator (`yield from heapq.merge(...)`) so the iterator holds `self`, as `segments` already does."""
    from cds_service.screening import rows

    monkeypatch.setattr(rows, "HELD", 5)

    def made() -> rows.Rows:
        r = rows.Rows()
        for batch in range(4):
            r.add([{"patient": f"p{batch}-{i}", "trial": "T"} for i in range(3)])
        assert r.spooled
        return r

    assert len(list(made())) == 12  # held by list() while it reads: fine
    try:
        got = [row["patient"] for row in made()]  # the Rows let go of once iter() has returned
    except FileNotFoundError as e:
        pytest.fail(f"the rows' spill folder was removed while they were read: {e}")
    assert len(got) == 12


def test_a_fifo_named_like_the_lock_does_not_hang_the_sweep(own_tmpdir):
    """Fault, new in 7e75a09. Every screen hangs before it starts, for ever, with no message, while $TMPDIR holds a
    folder `screen-*` of the same user whose `.in-use` is a FIFO (any program of that user's, a test, a mistaken
    `mkfifo`): `sweep` opens the lock with `os.open(folder / LOCK, O_RDONLY | O_NOFOLLOW)` (runtime.py:190), and
    opening a FIFO for reading blocks until a writer comes; Ctrl-C is held meanwhile (Scratch.__init__ sweeps under
    `interrupts_held`), so only SIGKILL ends it. A device or a directory named `.in-use` is opened too, and a
    directory's flock succeeds, so such a folder is removed as stale. Found by reading sweep against the brief's
    list (`.in-use` as a FIFO). Fix: open with `O_NONBLOCK` too and skip anything `os.fstat` does not call a regular
    file (`stat.S_ISREG`); then flock."""
    folder = own_tmpdir / "screen-fifo"
    folder.mkdir()
    os.mkfifo(folder / scratch.LOCK)
    script = "from cds_service.scratch import Scratch\nScratch('screen-').remove()\nprint('made')\n"
    try:
        done = _run(script, own_tmpdir, seconds=5)
    except subprocess.TimeoutExpired:
        pytest.fail("making a scratch folder hung on a FIFO named .in-use in $TMPDIR")
    assert done.returncode == 0 and done.stdout.strip() == "made", done.stderr[-2000:]
    assert folder.is_dir()  # not ours to remove: no lock file


def test_a_scratch_folder_that_could_not_be_locked_is_not_left_for_ever(own_tmpdir, monkeypatch):
    """Fault, new in 7e75a09. A screen stopped by `too many open files` (or any error, or SIGKILL, between
    `mkdtemp` and the rename of the lock file: runtime.py:167-171) says `stopped by a file error (OSError: Too many
    open files)` and leaves a folder `screen-XXXX` in $TMPDIR that no later screen ever removes: it has no `.in-use`,
    which `sweep` takes for another program's folder or one being made (runtime.py:190-192), so such folders pile up
    (with the `tmpXXXX` lock file in them when the error came after `mkstemp`). Found by failing `tempfile.mkstemp`
    inside Scratch.__init__ (EMFILE, which `_failure` names as a case it expects). Fix: in Scratch.__init__, on any
    exception after mkdtemp remove the folder (and close the descriptor) before re-raising; for a process killed in
    that window, let sweep also remove a lock-less folder of ours older than a few minutes."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(OSError):
        scratch.Scratch("screen-")
    monkeypatch.setattr(tempfile, "mkstemp", real)
    scratch.Scratch("screen-").remove()  # the next screen: its sweep
    left = sorted(p.name for p in own_tmpdir.iterdir())
    assert left == [], f"folders no screen will ever remove: {left}"


# The command with its first Ctrl-C swallowed in a finalizer just before it finishes (the way test_cleanup_attack's
# LOST stages it), and the handlers put back a moment before the timer that gives it again is cancelled.
LATE = r"""
import os, signal, sys, time
from cds_service.screening import command
real_summary = command._summary
class Swallower:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs here: its KeyboardInterrupt is printed and swallowed
            pass
def _summary(*args):
    real_summary(*args)
    Swallower()
command._summary = _summary
real_signal = signal.signal
def signal_(signum, handler):
    was = real_signal(signum, handler)
    if signum == signal.SIGINT and handler is signal.default_int_handler:
        time.sleep(0.05)  # the block's handlers put back; its timer not yet cancelled
    return was
signal.signal = signal_
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


def test_a_signal_given_again_never_lands_after_the_command_has_finished(export, tmp_path):  # noqa: F811
    """Fault, new in 18f19b0. A Ctrl-C that a finalizer swallows in the last moments of a screen (here during the
    summary) is given again 10 ms later by `Interruption.unraisable`'s timer; if the command has finished by then,
    the user sees a KeyboardInterrupt traceback through `interrupted_once` / `signals_to` after the screen's
    summary, and status 130 for a screen that wrote everything. `interrupted_once`'s `finally` (runtime.py:136-141)
    puts the handlers back first (the `with signals_to` exits) and only then cancels the timer; and `cancel` does
    not stop a timer already running `interrupt_main`, which then lands on whatever handler is in place:
    `default_int_handler`, outside every `except`. Natural windows are a few microseconds (a GIL switch at the
    wrong moment); staged here by swallowing the signal in a finalizer at the summary and making the restore of the
    SIGINT handler take 50 ms. Fix: at the end of the block, before the handlers are put back, set `happened` (so
    the handler ignores a late delivery), cancel the timer and join it; and have the timer's function check a
    `closed` flag under a lock before calling `interrupt_main`."""
    command = Command(tmp_path, LATE, export)
    try:
        code = command.end()
        assert "Traceback" not in command.err, command.err[-3000:]
        assert code in (0, 130), f"status {code}: {command.err[-2000:]}"
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


# --- held ------------------------------------------------------------------------------------------------------

# The command, paused in the screen process (partitions on disk, jobs with the workers) as soon as its rows have
# spilled to a folder of their own (HELD lowered), until XA_GO exists. `spawn`: a thread runs first, so the
# workers are spawned (they inherit no lock: the screen process alone holds them).
PAUSED = r"""
import os, sys, threading, time
from pathlib import Path
from cds_service.screening import rows, run
if os.environ["XA_HOW"] == "spawn":
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
rows.HELD = 10
mark, go = Path(os.environ["XA_MARK"]), Path(os.environ["XA_GO"])
real_add = rows.Rows.add
def add(self, batch):
    real_add(self, batch)
    if self.spooled and not mark.exists():
        mark.write_text(str(os.getpid()))
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
rows.Rows.add = add
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_a_live_screen_keeps_its_folders_while_another_screen_sweeps(how, export, tmp_path):  # noqa: F811
    """Two real screens with one TMPDIR: the first paused with its partitions, its workers' results folder and its
    spilled rows on disk while the second runs whole (sweeping `screen-`, `screen-results-`, `screen-rows-`). The
    first's folders are all still there, it then finishes with the same patients.csv, and TMPDIR ends empty."""
    go = tmp_path / "go"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Command(tmp_path / "a", PAUSED, export, {"XA_HOW": how, "XA_GO": str(go)})
    try:
        assert _until(lambda: first.mark.exists() or first.proc.poll() is not None, 20)
        assert first.mark.exists(), first.errors.read_text()[-2000:]
        held = first.left_folders()
        kinds = {name.rsplit("-", 1)[0] for name in held}
        assert kinds == {"screen", "screen-results", "screen-rows"}, held
        second = Command(tmp_path / "b", PLAIN, export, {"TMPDIR": str(first.tmp)})
        assert second.end() == 0, second.err[-2000:]
        assert set(held) <= set(first.left_folders()), "a live screen's folder was swept"
        go.write_text("")
        assert first.end() == 0, first.err[-2000:]
        assert (first.out / "patients.csv").read_bytes() == (second.out / "patients.csv").read_bytes()
        assert first.left_folders() == [] and first.left_processes == []
    finally:
        go.write_text("")
        _kill_group(first.proc)


def test_sweep_leaves_what_is_not_a_stale_folder_of_ours(own_tmpdir, tmp_path):
    """Left alone: a lock that is a symlink to a free lock file (O_NOFOLLOW), a folder being made (its lock file
    locked but not yet named `.in-use`), a stale folder of another prefix, another user's folder with a free lock,
    a plain file named like a folder. Removed: a stale folder of ours."""
    target = tmp_path / "free"
    target.write_bytes(b"")
    linked = own_tmpdir / "screen-linked"
    linked.mkdir()
    (linked / scratch.LOCK).symlink_to(target)
    making = own_tmpdir / "screen-making"
    making.mkdir()
    (making / "tmpabc").write_bytes(b"")
    other_prefix = own_tmpdir / "scree-other"
    other_prefix.mkdir()
    (other_prefix / scratch.LOCK).write_bytes(b"")
    theirs = own_tmpdir / "screen-theirs"
    theirs.mkdir()
    (theirs / scratch.LOCK).write_bytes(b"")
    if os.getuid() == 0:
        os.chown(theirs, 12345, 12345)
    plain = own_tmpdir / "screen-file"
    plain.write_bytes(b"")
    stale = own_tmpdir / "screen-stale"
    stale.mkdir()
    (stale / scratch.LOCK).write_bytes(b"")
    (stale / "part-0000.ndjson").write_bytes(b"{}\n")
    assert sorted(scratch.sweep("screen-")) == ([stale] if os.getuid() == 0 else [stale, theirs])
    assert linked.is_dir() and target.exists() and making.is_dir() and other_prefix.is_dir() and plain.exists()
    if os.getuid() == 0:
        assert theirs.is_dir()


SWARM = r"""
import os, sys
from cds_service.scratch import Scratch, sweep
lost = 0
for i in range(60):
    s = Scratch("screen-")
    (s.path / "part").write_bytes(b"x")
    sweep("screen-")
    if not (s.path / "part").exists():
        lost += 1
    s.remove()
print(lost)
"""


def test_scratch_folders_made_and_swept_at_once_by_many_processes_are_never_lost(own_tmpdir):
    """Four processes making, sweeping and removing scratch folders in one TMPDIR at once: none ever loses its own
    folder to another's sweep, and none is left."""
    env = {**os.environ, "TMPDIR": str(own_tmpdir)}
    procs = [subprocess.Popen([sys.executable, "-c", SWARM], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    try:
        results = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    assert [out.strip() for out, _ in results] == ["0"] * 4, [err[-1000:] for _, err in results]
    assert list(own_tmpdir.iterdir()) == []


def test_many_screens_in_one_process_leak_no_descriptor_and_no_folder(own_tmpdir, tmp_path, monkeypatch):
    """`run.screen` ten times in one process, rows spilled (HELD lowered), some of them failing: the open
    descriptors are as many as before, and TMPDIR is empty once the results are let go of."""
    import gc

    from bench.screen import write_export
    from cds_service.eligibility.catalog import Catalog
    from cds_service.screening import rows, run

    monkeypatch.setattr(rows, "HELD", 50)
    folder = tmp_path / "export"
    folder.mkdir()
    write_export(folder, 60, 20, 3)
    failing = _failing_export(tmp_path / "failing", date(2026, 11, 23))
    catalog = Catalog.load(DIRS[0], DIRS[1], horizon_days=365)

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    got = run.screen(folder, DIRS, date(2026, 11, 23), workers=1, catalog=catalog)
    assert got.rows.spooled
    del got
    gc.collect()
    before = fds()
    for i in range(10):
        try:
            got = run.screen(failing if i % 3 == 0 else folder, DIRS, date(2026, 11, 23), workers=1, catalog=catalog)
            del got
        except Exception:  # noqa: BLE001, S110 - the failing export's error: only what it leaves matters here
            pass
    gc.collect()
    assert fds() == before
    assert list(own_tmpdir.iterdir()) == []


def test_sigterm_to_the_whole_process_group_is_an_interruption_not_a_failure(export, tmp_path):  # noqa: F811
    """SIGTERM to the screen's whole group while a worker evaluates (systemd's KillMode=control-group, `kill --
    -PGID`): the workers die of it too, yet the command says it was interrupted (130), not that a worker ended
    abruptly, and leaves nothing."""
    command = Command(tmp_path, STAGED, export, {"XA_STAGE": "evaluate"})
    try:
        assert _until(lambda: command.mark.exists() or command.proc.poll() is not None)
        assert command.mark.exists(), "the stage was never reached"
        time.sleep(0.2)
        os.killpg(command.proc.pid, signal.SIGTERM)
        code = command.end()
        assert code == 130, f"status {code}: {command.err[-2000:]}"
        assert command.last_line() == INTERRUPTED, command.err[-2000:]
        assert "Traceback" not in command.err
        assert command.left_processes == [] and command.left_folders() == []
    finally:
        _kill_group(command.proc)


def test_failure_messages_are_one_line_and_name_no_file_content():
    """`_failure` of each kind it names: one line, no file name, no text the error carried beyond the system's."""
    from cds_service.screening.bulk import ExportFileError
    from cds_service.screening.command import _failure
    from cds_service.screening.workers import BrokenProcessPool, NoWorkers

    secret = 'Patient/123 {"name": "Jane"}\nsecond line'
    cases = [
        OSError(errno.ENOSPC, "No space left on device", f"/data/{secret}"),
        OSError(secret),
        BrokenProcessPool(secret),
        NoWorkers("the worker processes could not be started (BlockingIOError)"),
        ExportFileError("Patient.000.ndjson.gz cannot be read to its end (BadGzipFile)"),
    ]
    for e in cases:
        message = _failure(e)
        assert message is not None
        assert "\n" not in message and "Jane" not in message and "Patient/123" not in message, message
    assert _failure(ValueError(secret)) is None  # a fault of ours: a traceback
