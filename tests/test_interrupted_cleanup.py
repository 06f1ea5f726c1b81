"""A Ctrl-C or SIGTERM that lands while the screen cleans up (interrupts.interrupts_held, remove_folder).

A CI run of e5d9853 met it: a job runner's second SIGTERM reached a failed screen while `TemporaryDirectory`
deleted its partitions. `shutil.rmtree`, interrupted just after one of its `os.close` calls, closes the descriptor
again in its `finally`: the command printed `cannot write the results to OUT (OSError)`, exit 2, and left the
partitions in $TMPDIR. The clean-ups now finish first, and the signal is delivered after them; the command unwinds
on its first signal and ignores the next ones while it cleans up."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_fork_attack import (
    _failing_export,
    _gone,
    _kill_group,
    _own_tmp,
    big_export,  # noqa: F401 - a fixture, asked for by name
)

from cds_service import interrupts, scratch
from cds_service.settings import REPO_ROOT

INTERRUPTED = "screen: interrupted; the outputs in OUT may be incomplete"


def _work(folder: Path) -> Path:
    for d in range(3):
        (folder / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (folder / f"d{d}" / f"part-{f:04d}.ndjson").write_bytes(b"{}\n")
    return folder


def _raising(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_middle_of_removing_a_work_folder_waits_for_the_removal(signum, tmp_path, monkeypatch):
    folder = _work(tmp_path / "work")
    real_unlink, sent = os.unlink, []

    def unlink(path, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - rmtree's, with the signal on its first file
        if not sent:
            sent.append(path)
            os.kill(os.getpid(), signum)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    previous = signal.signal(signum, _raising)
    try:
        with pytest.raises(KeyboardInterrupt):  # delivered, once the folder is gone
            scratch.remove_folder(folder)
        assert signal.getsignal(signum) is _raising  # the handler it had, put back
    finally:
        signal.signal(signum, previous)
    assert sent, "the removal never unlinked a file: the test staged nothing"
    assert not folder.exists(), "the removal was cut short"


def test_a_signal_ignored_before_stays_ignored(tmp_path, monkeypatch):
    folder = _work(tmp_path / "work")
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGTERM)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        scratch.remove_folder(folder)  # no exception: SIGTERM was ignored, and is again
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not folder.exists()


def test_a_scratch_folder_is_removed_when_its_block_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read $TMPDIR again
    with pytest.raises(RuntimeError), scratch.scratch_folder("screen-") as folder:
        _work(folder / "inner")
        raise RuntimeError
    assert folder.parent == tmp_path and not folder.exists()


def test_the_command_unwinds_on_the_first_signal_and_ignores_the_next():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts.interrupted_once():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at once: the sleep is cut short
        os.kill(os.getpid(), signal.SIGINT)  # the clean-up goes on
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# The command on an export that fails (a truncated .gz), with a SIGTERM sent to itself when the removal of its
# partitions starts (the moment the CI run's second SIGTERM came), or when any of its folders is removed.
TERM_IN_REMOVAL = """
import os, shutil, signal, sys
real = shutil.rmtree
def rmtree(path, *args, **kwargs):
    name = os.path.basename(str(path))
    if name.startswith("screen-") and (os.environ["XA_EVERY"] == "1" or "results" not in name):
        os.kill(os.getpid(), signal.SIGTERM)
    return real(path, *args, **kwargs)
shutil.rmtree = rmtree
from cds_service.cli import main
sys.exit(main())  # as the console script calls it
"""


@pytest.mark.parametrize("every", ["0", "1"])
def test_a_sigterm_while_a_failed_screen_removes_its_partitions(every, as_of, tmp_path):
    folder = _failing_export(tmp_path / "export", as_of)
    argv = [sys.executable, "-c", TERM_IN_REMOVAL, "screen", str(folder), "--workers", "2", "--as-of", "2026-11-23",
            "--out", str(tmp_path / "out"), "--no-store"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**_own_tmp(tmp_path), "XA_EVERY": every})  # fmt: skip
    try:
        _, err = proc.communicate(timeout=30)
        text = err.decode()
        assert proc.returncode == 130, text[-3000:]
        assert text.rstrip().endswith(INTERRUPTED), text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert _gone(proc.pid) == []
        assert not list((tmp_path / "tmp").glob("screen-*")), "the partitions were left behind"
    finally:
        _kill_group(proc)


# --- what a process killed outright leaves: swept by the next one ---------------------------------------------------

HOLDER = """
import sys, time
from cds_service.scratch import Scratch
scratch = Scratch(sys.argv[1])
(scratch.path / "part-0000.ndjson").write_bytes(b"{}\\n")
print(scratch.path, flush=True)
time.sleep(60)
"""


def _holder(tmp_path: Path, prefix: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, prefix], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    return proc, Path(proc.stdout.readline().strip())


def test_the_folders_of_a_killed_process_are_swept_and_no_others(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    killed, killed_folder = _holder(tmp_path, "screen-")
    live, live_folder = _holder(tmp_path, "screen-")
    plain = tmp_path / "screen-plain"  # another program's, or one of ours not yet locked: no lock file
    plain.mkdir()
    elsewhere = tmp_path / "elsewhere"  # a link to a folder with a free lock: never followed
    elsewhere.mkdir()
    (elsewhere / scratch.LOCK).write_bytes(b"")
    (tmp_path / "screen-link").symlink_to(elsewhere)
    try:
        assert killed_folder.is_dir() and live_folder.is_dir()
        assert scratch.sweep("screen-") == []  # both held
        killed.kill()
        killed.wait(timeout=10)
        assert scratch.sweep("screen-") == [killed_folder]
        assert not killed_folder.exists()
        assert live_folder.is_dir() and (live_folder / "part-0000.ndjson").exists()
        assert plain.is_dir() and (elsewhere / scratch.LOCK).exists()
    finally:
        for proc in (killed, live):
            proc.kill()
            proc.wait(timeout=10)


def test_a_screen_killed_outright_leaves_partitions_the_next_screen_removes(request, tmp_path):
    export = request.getfixturevalue("big_export")  # about 30 MB: a second or two on two workers
    env = _own_tmp(tmp_path)
    argv = [sys.executable, "-m", "cds_service.cli", "screen", str(export), "--workers", "2",
            "--as-of", "2026-11-23", "--no-store"]  # fmt: skip
    proc = subprocess.Popen([*argv, "--out", str(tmp_path / "out1")], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "tmp").glob("screen-*/part-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()  # routing: partitions on disk
        proc.wait(timeout=10)
        left = [p for p in (tmp_path / "tmp").glob("screen-*") if "results" not in p.name]
        assert left, "the screen was not caught partitioning: the test staged nothing"
        assert _gone(proc.pid) == []  # its workers end by themselves
        done = subprocess.run([*argv, "--out", str(tmp_path / "out2")], cwd=REPO_ROOT, capture_output=True, env=env,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert list((tmp_path / "tmp").glob("screen-*")) == []
    finally:
        _kill_group(proc)


# --- the $export before a screen ----------------------------------------------------------------------------------


class _Stalling(http.server.BaseHTTPRequestHandler):
    """A FHIR server whose $export kick-off never answers (a slow or stuck server)."""

    asked = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).asked.set()
        time.sleep(30)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_export_is_one_line(signum, tmp_path):
    """Was a traceback (Ctrl-C) or the process ended where it stood (SIGTERM): the $export ran before the command
    took its signals."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stalling.asked.clear()
    argv = [sys.executable, "-m", "cds_service.cli", "screen", "--fhir-server",
            f"http://127.0.0.1:{server.server_port}/fhir", "--out", str(tmp_path / "out"), "--no-store"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=_own_tmp(tmp_path))  # fmt: skip
    try:
        assert _Stalling.asked.wait(30), "the command never asked for the export"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        text = err.decode()
        assert proc.returncode == 130, text[-3000:]
        assert text.rstrip().endswith(INTERRUPTED) and "Traceback" not in text, text[-3000:]
    finally:
        _kill_group(proc)
        server.shutdown()
